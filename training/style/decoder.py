"""The reconstruction decoders of universal style transfer as pure ``nn.Module``s (no I/O).

``Decoder`` mirrors the VGG up to one level ``relu{B}_1`` (reflection padding, 3x3 convs, ReLU,
nearest x2 upsampling); ``width`` scales its inner channels (a slimmer decoder for CPUs); a
``pointwise_entry`` decoder starts with a 1x1 convolution, into which the transform folds.
``padding_plan`` says where a decoder may mirror its input once for several convolutions;
``decoder_config`` and ``build_decoder`` describe and rebuild a set of decoders (checkpoints, export).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.style.levels import VGG_WIDTHS, layer_block

DECODER_CONVS = (2, 2, 4)  # convs mirrored in blocks 1..3 (VGG19's counts, as in pytorch-AdaIN)
# The smallest features a decoder is given, a side: the service pads thin images up to this
# (``MIN_FEATURE_SIDE`` in service/style.py), so a decoder may mirror by up to one less (``padding_plan``).
MIN_FEATURE_SIDE = 4


def _conv(in_ch: int, out_ch: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def _crop(x: Tensor, margin: int) -> Tensor:
    return x[..., margin:-margin, margin:-margin] if margin else x


def padding_plan(layers: Sequence[nn.Module], min_side: int = MIN_FEATURE_SIDE) -> dict[int, int]:
    """Where ``layers`` (a decoder's: ``ReflectionPad2d(1)`` before each 3x3 convolution, nearest x2
    upsamplings, per-pixel layers) mirror their input once for several convolutions: index of a
    ``ReflectionPad2d`` -> how many pixels to mirror there, for it and every one after it up to the
    next entry (``Decoder._run``). As few entries as the margin allows: mirrored by ``p``, an input
    must be more than ``p`` a side, and the smallest input is ``min_side`` a side at the decoder's
    input size, twice that after each upsampling.

    Away from the border the result is the same as mirroring before every convolution; within
    ``p`` pixels of it, the later convolutions see the first one's output on mirrored input where
    they saw its output mirrored (the same only for symmetric kernels). On the CPU the difference
    is time: ONNX Runtime runs convolutions in a blocked layout (NCHWc) but mirrors in the plain
    one, so every ``Pad`` cost two layout copies besides its own."""
    ups = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Upsample)]
    plan: dict[int, int] = {}
    # walking back: the margin the layers from ``start`` on use up, at ``start`` and at layer i's size
    start, at_start, need = None, 0, 0
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        scale = 2 ** sum(u < i for u in ups)  # the size of layer i's input, in decoder-input sizes
        if isinstance(layer, nn.Upsample):
            need = -(-need // 2)
            if need >= min_side * scale:  # too much to carry below: mirror after the upsampling
                plan[start], start, need = at_start, None, 0
        elif isinstance(layer, nn.ReflectionPad2d):
            if need + 1 >= min_side * scale:
                plan[start], need = at_start, 0
            start, need = i, need + 1
            at_start = need
    if start is not None:
        plan[start] = at_start
    return plan


class Decoder(nn.Module):
    """Features at ``layer`` (N, C_B, H/2^(B-1), W/2^(B-1)) -> image (N, out_channels, H, W), unclamped.

    For relu4_1 at ``width`` 1 this is pytorch-AdaIN's decoder:
    512->256, up, 256->256 x3, 256->128, up, 128->128, 128->64, up, 64->64, 64->3;
    relu1_1 is 64->64, 64->3. ``width`` scales every inner width (not the input's).
    ``input_scale`` (a buffer, saved with the weights) multiplies the features first, so that the
    first convolution sees unit-scale inputs whatever the VGG's normalisation (HED's 0-255 input
    gives features ~100x larger than ImageNet's); the trainer sets it from the encoder.
    ``pointwise_entry``: a 1x1 convolution C_B -> inner_B and a ReLU come first (the rest as above,
    from inner_B channels): the statistics transform, itself per-pixel, then folds into its weights
    (``forward_mapped``), so a full-size level never computes the transformed features at all.
    """

    def __init__(
        self,
        layer: str = "relu4_1",
        width: float = 1.0,
        convs_per_block: Sequence[int] = DECODER_CONVS,
        out_channels: int = 3,
        input_scale: float = 1.0,
        pointwise_entry: bool = False,
    ):
        super().__init__()
        top = layer_block(layer)
        self.layer, self.width, self.pointwise_entry = layer, width, bool(pointwise_entry)
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        inner = [max(8, round(w * width)) for w in VGG_WIDTHS]
        ch = VGG_WIDTHS[top - 1]
        layers: list[nn.Module] = []
        if pointwise_entry:  # (C_B, h, w) -> (inner_B, h, w), per pixel
            layers += [nn.Conv2d(ch, inner[top - 1], 1), nn.ReLU(inplace=True)]
            ch = inner[top - 1]
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
        self.padding = padding_plan(self.net)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat * self.input_scale)

    def _run(self, x: Tensor, start: int = 0, mirror_once: bool = False) -> Tensor:
        """``self.net[start:](x)``; ``mirror_once``: mirroring the input as ``self.padding`` plans
        (once for several convolutions) instead of before every convolution."""
        if not mirror_once:
            return self.net[start:](x)
        margin = 0  # mirrored pixels x carries on each side
        for i in range(start, len(self.net)):
            layer = self.net[i]
            if i in self.padding:
                x = _crop(x, margin)
                margin = self.padding[i]
                x = F.pad(x, (margin,) * 4, mode="reflect")
            if isinstance(layer, nn.ReflectionPad2d):
                margin -= 1  # the convolution after it uses one pixel of the margin
                continue
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                margin *= 2
        return _crop(x, margin)

    def forward_mapped(self, feat: Tensor, m: Tensor, b: Tensor, mirror_once: bool = False) -> Tensor:
        """``self(m f + b)`` for features ``f`` (N, C, H, W) and a per-image affine map ``m`` (N, C, C),
        ``b`` (N, C, 1) (``functions.statistics_map``), with the map folded into the first layer: the
        input scale into ``m`` and ``b``, and for a ``pointwise_entry`` decoder ``m`` and ``b`` into
        the 1x1 convolution's weights (K, C) and bias, so ``m f + b`` (C channels at the features'
        size) is never made: one (K x C) product per pixel instead of a C x C one and a convolution.
        ``mirror_once``: the convolutions mirror their input as ``padding_plan`` says (the same
        image but within a few pixels of the border, and faster in ONNX Runtime on the CPU)."""
        n, c, h, w = feat.shape
        m, b, f = m * self.input_scale, b * self.input_scale, feat.reshape(n, c, h * w)
        if not self.pointwise_entry:
            return self._run((m @ f + b).reshape(n, c, h, w), 0, mirror_once)
        entry = self.net[0]
        weight = entry.weight[:, :, 0, 0]  # (K, C)
        hidden = (weight @ m) @ f + (weight @ b + entry.bias[:, None])  # (N, K, H*W)
        return self._run(hidden.reshape(n, -1, h, w), 1, mirror_once)


def decoder_config(decoders: Mapping[str, Decoder]) -> dict[str, Any]:
    """What rebuilds ``decoders`` (level -> decoder) with ``build_decoder``: their levels in order,
    each one's width, and the levels whose decoder has a ``pointwise_entry``."""
    return {
        "levels": list(decoders),
        "widths": {level: d.width for level, d in decoders.items()},
        "pointwise_entry": [level for level, d in decoders.items() if d.pointwise_entry],
    }


def build_decoder(config: Mapping[str, Any], level: str, input_scale: float = 1.0) -> Decoder:
    """An untrained decoder of ``level`` as ``config`` (``decoder_config``) describes it; a config
    from before per-level widths (only ``width``) describes decoders without a pointwise entry."""
    width = config.get("widths", {}).get(level, config.get("width"))
    return Decoder(level, width, input_scale=input_scale, pointwise_entry=level in config.get("pointwise_entry", ()))
