"""GAN maths as small pure functions: losses, DiffAugment, EMA."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ns", "hinge")
AUGMENTS = ("color", "translation", "cutout")


def d_loss(
    kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Discriminator loss. ``ns``: BCE with real target ``1 - label_smoothing`` (one-sided); ``hinge``."""
    if kind == "ns":
        real_target = torch.full_like(real_logits, 1.0 - label_smoothing)
        return F.binary_cross_entropy_with_logits(real_logits, real_target) + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {LOSSES}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: non-saturating -log D(G(z)) (``ns``) or -D(G(z)) (``hinge``)."""
    if kind == "ns":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {LOSSES}")


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the mean over the batch of |grad_x D(x)|^2 at the real images.

    ``real`` must require grad and ``real_logits`` come from it; the graph is kept, so the
    penalty's own gradient reaches D's weights.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def mode_seeking_loss(
    x1: torch.Tensor, x2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Mode-seeking regulariser (Mao et al. 2019): small when two latents give different images.

    ``1 / (mean|x1 - x2| / mean|z1 - z2| + eps)``, for pairs generated with the same label; added to
    the generator loss it counters mode collapse within a class.
    """
    ratio = (x1 - x2).abs().mean() / (z1 - z2).abs().mean()
    return 1.0 / (ratio + eps)


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020) applied to real and fake images alike.

    ``policy`` is a comma-separated subset of ``color,translation,cutout`` ('' = identity).
    Images are in [-1, 1], shape (N, C, H, W); every sample draws its own parameters.
    """
    for name in filter(None, policy.split(",")):
        if name not in AUGMENTS:
            raise ValueError(f"unknown DiffAugment {name!r}: use {','.join(AUGMENTS)}")
        x = {"color": _color, "translation": _translation, "cutout": _cutout}[name](x, generator)
    return x


def _rand(n: int, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=g, device=g.device if g is not None else x.device).to(x.device, x.dtype)


def _color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand(n, x, g) - 0.5)  # brightness
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(n, x, g) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, x, g) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with the background value -1."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = g.device if g is not None else x.device
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=g, device=dev).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=g, device=dev).to(x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1) - ty  # source row of each output row
    xx = torch.arange(w, device=x.device).view(1, 1, w) - tx
    valid = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).unsqueeze(1)
    idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    shifted = x.flatten(2).gather(2, idx).view_as(x)
    return torch.where(valid, shifted, torch.full_like(x, -1.0))


def _cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Blank one square of ``ratio`` × size per image (set to 0, mid-grey in [-1, 1])."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = g.device if g is not None else x.device
    cy = torch.randint(0, h + 1 - ch % 2, (n, 1, 1), generator=g, device=dev).to(x.device)
    cx = torch.randint(0, w + 1 - cw % 2, (n, 1, 1), generator=g, device=dev).to(x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((yy - cy).abs() < ch // 2 + 1) & ((xx - cx).abs() < cw // 2 + 1)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class EMA:
    """Exponential moving average of a model's parameters.

    The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so the average is not
    dominated by the random initialisation in short runs. BatchNorm statistics of the training
    model do not fit the averaged weights, so ``recalibrate`` recomputes them for the average
    before it is sampled, evaluated or saved.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), not {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def recalibrate(self, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
        """Set BatchNorm running statistics to the exact averages over ``batches`` of model inputs."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        self.model.train()
        for inputs in batches:
            self.model(*inputs)
        self.model.eval()
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def as_float(images: torch.Tensor) -> torch.Tensor:
    """Images held as uint8 pixels (0..255) or float in [-1, 1], as float32 in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images
