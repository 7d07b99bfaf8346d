"""AdaIN style-transfer networks as pure ``nn.Module``s (no I/O; every size a constructor argument).

- ``Encoder``: a frozen ``VGGFeatures`` up to its last layer (relu4_1 or the lighter relu3_1).
- ``Decoder``: mirrors the VGG up to that layer (reflection padding, 3x3 convs, ReLU, nearest x2
  upsampling), as in naoto0804/pytorch-AdaIN, truncated for shallower layers.
- ``Stylizer``: the exported serving graph: AdaIN + ``strength`` blend + decoder + clamp.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.style.functions import EPS, adain, blend

VGG_WIDTHS = (64, 128, 256, 512)  # conv widths of VGG blocks 1..4
DECODER_CONVS = (2, 2, 4)  # convs mirrored in blocks 1..3 (VGG19's counts, as in pytorch-AdaIN)
ENCODER_LAYERS = ("relu2_1", "relu3_1", "relu4_1")


def layer_block(layer: str) -> int:
    """Block number of an encoder layer ``relu{B}_1`` (B in 2..4); raises on anything else."""
    m = re.fullmatch(r"relu([234])_1", layer)
    if m is None:
        raise ValueError(f"encoder layer must be one of {ENCODER_LAYERS}, not {layer!r}")
    return int(m[1])


def size_multiple(layer: str) -> int:
    """Input H and W must be multiples of this for the decoder to return the input's size."""
    return 2 ** (layer_block(layer) - 1)


def feature_channels(layer: str, widths: Sequence[int] = VGG_WIDTHS) -> int:
    return widths[layer_block(layer) - 1]


def style_layers(layer: str) -> list[str]:
    """Layers of the style loss: relu1_1 up to the encoder layer."""
    return [f"relu{b}_1" for b in range(1, layer_block(layer) + 1)]


class Encoder(nn.Module):
    """Image RGB [0, 1] (N, 3, H, W) -> VGG features at ``vgg.last_layer``.

    relu4_1: (N, 512, H/8, W/8); relu3_1: (N, 256, H/4, W/4); relu2_1: (N, 128, H/2, W/2).
    """

    def __init__(self, vgg: nn.Module):
        super().__init__()
        self.vgg = vgg
        self.layer = vgg.last_layer

    def forward(self, image: Tensor) -> Tensor:
        return self.vgg(image)[self.layer]


def _conv(in_ch: int, out_ch: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class Decoder(nn.Module):
    """Features at ``layer`` (N, C_B, H/2^(B-1), W/2^(B-1)) -> image (N, out_channels, H, W), unclamped.

    For relu4_1 with the defaults this is pytorch-AdaIN's decoder:
    512->256, up, 256->256 x3, 256->128, up, 128->128, 128->64, up, 64->64, 64->3.
    ``input_scale`` (a buffer, saved with the weights) multiplies the features first, so that the
    first convolution sees unit-scale inputs whatever the VGG's normalisation (HED's 0-255 input
    gives features ~100x larger than ImageNet's); the trainer sets it from the encoder.
    """

    def __init__(self, layer: str = "relu4_1", widths: Sequence[int] = VGG_WIDTHS,
                 convs_per_block: Sequence[int] = DECODER_CONVS, out_channels: int = 3,
                 input_scale: float = 1.0):
        super().__init__()
        top = layer_block(layer)
        self.layer = layer
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        # mirror of conv{top}_1: (C_top, h, w) -> (C_{top-1}, 2h, 2w)
        layers = _conv(widths[top - 1], widths[top - 2]) + [nn.Upsample(scale_factor=2, mode="nearest")]
        for block in range(top - 1, 0, -1):
            width = widths[block - 1]
            for _ in range(convs_per_block[block - 1] - 1):
                layers += _conv(width, width)  # (width, h, w) -> same
            if block > 1:  # mirror of conv{block}_1, then x2: -> (widths[block-2], 2h, 2w)
                layers += _conv(width, widths[block - 2]) + [nn.Upsample(scale_factor=2, mode="nearest")]
            else:  # mirror of conv1_1: (64, H, W) -> (out_channels, H, W), no ReLU
                layers += _conv(width, out_channels, relu=False)
        self.net = nn.Sequential(*layers)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat * self.input_scale)


class Stylizer(nn.Module):
    """The serving graph after the encoder.

    ``content_feat`` (N, C, h, w), ``style_mean`` / ``style_std`` (N, C), ``strength`` (N,) in [0, 1]
    -> image (N, 3, h * m, w * m) in [0, 1], where m = ``size_multiple(decoder.layer)``.
    """

    def __init__(self, decoder: Decoder, eps: float = EPS):
        super().__init__()
        self.decoder = decoder
        self.eps = eps

    def forward(self, content_feat: Tensor, style_mean: Tensor, style_std: Tensor,
                strength: Tensor) -> Tensor:
        t = adain(content_feat, style_mean, style_std, self.eps)  # (N, C, h, w)
        t = blend(t, content_feat, strength)
        return self.decoder(t).clamp(0.0, 1.0)
