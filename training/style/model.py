"""Universal style-transfer networks as pure ``nn.Module``s (no I/O; every size a constructor argument).

Li et al. 2017 ("Universal Style Transfer via Feature Transforms"): decoders trained only to
*reconstruct* images from VGG features, and a closed-form transform that gives the content's
features the style's mean and covariance, level by level from coarse to fine. No style is seen in
training, so any style works that the statistics can describe.

- ``Decoder``: mirrors the VGG up to one level ``relu{B}_1`` (reflection padding, 3x3 convs, ReLU,
  nearest x2 upsampling); ``width`` scales its inner channels (a slimmer decoder for CPUs).
- ``StyleEncoder``: image -> (mean, covariance) of the VGG features at every level: the exported
  graph that computes a style's statistics (presets and uploads alike).
- ``Cascade``: the exported serving graph: for each level, coarse to fine, encode the current
  image, match the style's statistics (``strength`` blends), decode; the output feeds the next level.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.style.functions import NS_ITERS, feature_stats, match_statistics

VGG_WIDTHS = (64, 128, 256, 512)  # conv widths of VGG blocks 1..4
DECODER_CONVS = (2, 2, 4)  # convs mirrored in blocks 1..3 (VGG19's counts, as in pytorch-AdaIN)
ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def layer_block(layer: str) -> int:
    """Block number of an encoder layer ``relu{B}_1`` (B in 1..4); raises on anything else."""
    m = re.fullmatch(r"relu([1234])_1", layer)
    if m is None:
        raise ValueError(f"encoder layer must be one of {ENCODER_LAYERS}, not {layer!r}")
    return int(m[1])


def size_multiple(layer: str) -> int:
    """Input H and W must be multiples of this for the decoder to return the input's size."""
    return 2 ** (layer_block(layer) - 1)


def feature_channels(layer: str, widths: Sequence[int] = VGG_WIDTHS) -> int:
    return widths[layer_block(layer) - 1]


def levels_up_to(layer: str) -> list[str]:
    """The cascade's levels, coarse to fine: ``layer`` down to relu1_1."""
    return [f"relu{b}_1" for b in range(layer_block(layer), 0, -1)]


def _conv(in_ch: int, out_ch: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class Decoder(nn.Module):
    """Features at ``layer`` (N, C_B, H/2^(B-1), W/2^(B-1)) -> image (N, out_channels, H, W), unclamped.

    For relu4_1 at ``width`` 1 this is pytorch-AdaIN's decoder:
    512->256, up, 256->256 x3, 256->128, up, 128->128, 128->64, up, 64->64, 64->3;
    relu1_1 is 64->64, 64->3. ``width`` scales every inner width (not the input's).
    ``input_scale`` (a buffer, saved with the weights) multiplies the features first, so that the
    first convolution sees unit-scale inputs whatever the VGG's normalisation (HED's 0-255 input
    gives features ~100x larger than ImageNet's); the trainer sets it from the encoder.
    """

    def __init__(
        self,
        layer: str = "relu4_1",
        width: float = 1.0,
        convs_per_block: Sequence[int] = DECODER_CONVS,
        out_channels: int = 3,
        input_scale: float = 1.0,
    ):
        super().__init__()
        top = layer_block(layer)
        self.layer, self.width = layer, width
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        inner = [max(8, round(w * width)) for w in VGG_WIDTHS]
        ch = VGG_WIDTHS[top - 1]
        layers: list[nn.Module] = []
        for block in range(top, 0, -1):
            # the top block's convs are mirrored by the one below, except relu1_1's (mirror of conv1_2)
            for _ in range(convs_per_block[block - 1] - 1 if block < top or top == 1 else 0):
                layers += _conv(ch, inner[block - 1])  # (ch, h, w) -> (inner_B, h, w)
                ch = inner[block - 1]
            if block > 1:  # mirror of conv{block}_1, then x2: -> (inner_{B-1}, 2h, 2w)
                layers += _conv(ch, inner[block - 2]) + [nn.Upsample(scale_factor=2, mode="nearest")]
                ch = inner[block - 2]
        layers += _conv(ch, out_channels, relu=False)  # mirror of conv1_1, no ReLU
        self.net = nn.Sequential(*layers)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat * self.input_scale)


class StyleEncoder(nn.Module):
    """Image RGB [0, 1] (N, 3, H, W) -> for each of ``levels``: mean (N, C) and covariance (N, C, C)
    of its VGG features, flattened as (mean_1, cov_1, mean_2, cov_2, ...)."""

    def __init__(self, vgg: nn.Module, levels: Sequence[str]):
        super().__init__()
        self.vgg, self.levels = vgg, list(levels)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        feats = self.vgg(image, self.levels)
        return tuple(t for level in self.levels for t in feature_stats(feats[level]))


class Cascade(nn.Module):
    """The serving graph: image (N, 3, H, W) in [0, 1] (H, W multiples of the coarsest level's
    ``size_multiple``), ``strength`` (N,) in [0, 1], and the style's mean (N, C) and cov (N, C, C)
    for each of ``levels`` in order -> image (N, 3, H, W) in [0, 1].

    ``levels`` run coarse to fine; each encodes the previous level's output, matches the style's
    statistics there (``transform``: ``ot`` or ``wct``, see ``functions.transform_matrix``) and
    decodes it. Strength 0 is the decoders' reconstruction of the content.
    """

    def __init__(self, vgg: nn.Module, decoders: Sequence[Decoder], transform: str = "wct", iters: int = NS_ITERS):
        super().__init__()
        if not 1 <= len(decoders) <= len(ENCODER_LAYERS):
            raise ValueError(f"1 to {len(ENCODER_LAYERS)} decoders, not {len(decoders)}")
        self.vgg, self.decoders = vgg, nn.ModuleList(decoders)
        self.levels = [d.layer for d in decoders]
        self.transform, self.iters = transform, iters

    # A fixed signature (no *args), so that torch.export sees one tensor per ONNX input.
    def forward(
        self,
        image: Tensor,
        strength: Tensor,
        mean_0: Tensor,
        cov_0: Tensor,
        mean_1: Tensor | None = None,
        cov_1: Tensor | None = None,
        mean_2: Tensor | None = None,
        cov_2: Tensor | None = None,
        mean_3: Tensor | None = None,
        cov_3: Tensor | None = None,
    ) -> Tensor:
        stats = [(mean_0, cov_0), (mean_1, cov_1), (mean_2, cov_2), (mean_3, cov_3)]
        x = image
        for (level, decoder), (mean, cov) in zip(zip(self.levels, self.decoders), stats):
            feat = self.vgg(x, [level])[level]
            moved = match_statistics(feat, mean, cov, strength, self.transform, self.iters)
            x = decoder(moved).clamp(0.0, 1.0)
        return x
