"""DCGAN generator and discriminator for 32, 64 and 128 px, 1 or 3 channels, optionally class-conditional.

Pure modules: every size is a constructor argument, no I/O. Shapes are for the default
``base_channels=64`` at 32 px; each extra doubling of ``image_size`` adds one block.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

SUPPORTED_SIZES = (32, 64, 128)


def _num_blocks(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, not {image_size}")
    return int(math.log2(image_size)) - 2  # 4x4 -> image_size in this many doublings


class Generator(nn.Module):
    """Latent ``z`` (N, latent_dim) [and label (N,)] -> image (N, channels, S, S) in [-1, 1]."""

    def __init__(
        self,
        latent_dim: int = 100,
        image_size: int = 32,
        channels: int = 1,
        base_channels: int = 64,
        num_classes: int = 0,
        embed_dim: int = 32,
        upsample: str = "transposed",
    ):
        super().__init__()
        if upsample not in ("transposed", "nearest"):
            raise ValueError(f"upsample must be 'transposed' or 'nearest', not {upsample!r}")
        blocks = _num_blocks(image_size)
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.num_classes = num_classes
        width = base_channels * 2 ** (blocks - 1)  # 256 channels at 4x4 for 32 px
        # The label's embedding keeps PyTorch's N(0, 1) init so that it weighs like the latent from
        # the first step (at DCGAN's N(0, 0.02) the generator learns to ignore the label).
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        self.project = nn.Sequential(  # (N, in_dim) -> (N, width * 16)
            nn.Linear(in_dim, width * 16, bias=False),
            nn.BatchNorm1d(width * 16),
            nn.ReLU(inplace=True),
        )
        self.width = width
        layers: list[nn.Module] = []
        for _ in range(blocks - 1):  # 4x4 -> 8x8 -> 16x16 (width halves each time)
            layers += [_up(width, width // 2, upsample), nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [_up(width, channels, upsample), nn.Tanh()]  # -> (N, channels, S, S)
        self.body = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if label is None:
                raise ValueError("this generator is class-conditional: pass a label")
            z = torch.cat([z, self.embed(label)], dim=1)
        h = self.project(z).view(z.shape[0], self.width, 4, 4)  # (N, width, 4, 4)
        return self.body(h)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02).

    Embeddings are left to their owners (see Generator and Discriminator).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _up(cin: int, cout: int, mode: str) -> nn.Module:
    if mode == "transposed":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    # Nearest upsampling + 3x3 conv: no checkerboard artefacts at 64-128 px.
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False))


class Discriminator(nn.Module):
    """Image (N, channels, S, S) [and label] -> one real/fake logit (N,).

    Class-conditional through a projection (Miyato & Koyama 2018): logit = w.h + embed(label).h.
    With ``spectral_norm`` every weight is spectrally normalised and BatchNorm is left out.
    With ``minibatch_std`` (Karras et al. 2018) the 4x4 features get one more channel: the mean
    standard deviation of the features across the batch, so D can tell a batch that lacks
    variety — the signal against mode collapse.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        base_channels: int = 64,
        num_classes: int = 0,
        spectral: bool = False,
        minibatch_std: bool = True,
        aux_classifier: bool = False,
    ):
        super().__init__()
        blocks = _num_blocks(image_size)
        self.minibatch_std = minibatch_std
        norm = spectral_norm if spectral else (lambda m: m)
        width = base_channels
        layers: list[nn.Module] = [norm(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(blocks - 1):  # S/2 -> ... -> 4x4, channels doubling
            layers.append(norm(nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral)))
            if not spectral:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        self.body = nn.Sequential(*layers)  # -> (N, width, 4, 4)
        features = (width + int(minibatch_std)) * 16  # (N, width [+ 1], 4, 4) flattened
        self.head = norm(nn.Linear(features, 1))
        self.embed = norm(nn.Embedding(num_classes, features)) if num_classes else None
        # AC-GAN (Odena et al. 2017): a class head on the same features, trained on the real labels
        self.classify = norm(nn.Linear(features, num_classes)) if aux_classifier and num_classes else None
        init_dcgan_weights(self)
        if self.embed is not None:  # small, like the head: the projection starts near zero
            weight = self.embed.parametrizations.weight.original if spectral else self.embed.weight
            nn.init.normal_(weight, 0.0, 0.02)

    def forward(
        self, x: torch.Tensor, label: torch.Tensor | None = None, classes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The real/fake logits (N,); with ``classes`` (an ``aux_classifier`` D) also the class
        logits (N, num_classes)."""
        h = self.body(x)  # (N, width, 4, 4)
        if self.minibatch_std:
            spread = h.std(dim=0, unbiased=False).mean() if h.shape[0] > 1 else h.new_zeros(())
            h = torch.cat([h, spread.expand(h.shape[0], 1, 4, 4)], dim=1)
        h = h.flatten(1)
        logit = self.head(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(label) * h).sum(dim=1)
        if classes:
            if self.classify is None:
                raise ValueError("this discriminator has no class head (aux_classifier)")
            return logit, self.classify(h)
        return logit
