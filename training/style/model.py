"""Universal style-transfer networks as pure ``nn.Module``s (no I/O; every size a constructor argument).

Li et al. 2017 ("Universal Style Transfer via Feature Transforms"): decoders trained only to
*reconstruct* images from VGG features, and a closed-form transform that gives the content's
features the style's mean and covariance, level by level from coarse to fine. No style is seen in
training, so any style works that the statistics can describe.

- ``Decoder``: mirrors the VGG up to one level ``relu{B}_1`` (reflection padding, 3x3 convs, ReLU,
  nearest x2 upsampling); ``width`` scales its inner channels (a slimmer decoder for CPUs); a
  ``pointwise_entry`` decoder starts with a 1x1 convolution, into which the transform folds.
- ``StyleEncoder``: image -> (mean, covariance) of the VGG features at every level: the exported
  graph that computes a style's statistics (presets and uploads alike).
- ``Cascade``: the exported serving graph: for each level, coarse to fine, encode the current
  image, match the style's statistics (``strength`` blends), decode; the output feeds the next level.
  The coarsest level may run on a Laplacian pyramid of the image first (``coarse_scales``), which
  gives a shallow level the reach of a deeper one: larger strokes without a deeper decoder; the
  next level may paint the pyramid's last sizes before its full-size stage (``fine_scales``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.style.functions import NS_ITERS, blend, feature_stats, statistics_map, style_factor
from training.style.pyramid import keep_shading, laplacian_pyramid

VGG_WIDTHS = (64, 128, 256, 512)  # conv widths of VGG blocks 1..4
DECODER_CONVS = (2, 2, 4)  # convs mirrored in blocks 1..3 (VGG19's counts, as in pytorch-AdaIN)
ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
# The Laplacian pyramid a shallow coarsest level (relu2_1, relu1_1) starts from by default (see
# ``Cascade``): its pass at 1/8 is where the style's patches go in (``swap.py``): there matching is a
# sixteenth of its cost at 1/4 and, measured, styles more (docs/style-transfer.md, "The style's shapes").
PYRAMID = (8, 4, 2)
# When the next level is relu1_1, it paints the pyramid's 1/4 and 1/2 sizes instead (``default_scales``):
# relu2_1's statistics passes there cost a third of the stylizer's time and added little.
FINE_SCALES = (4, 2)
# The pyramid's passes keep the photo's light and dark above this scale (``keep_shading``): measured on
# the held-out pairs, 2 (two 5x5 box filters at each size) keeps the objects readable where the passes
# had painted blotches over them, and still styles more than the peer (docs/style-transfer.md).
SHADING_RADIUS = 2
# The smallest features a decoder is given, a side: the service pads thin images up to this
# (``MIN_FEATURE_SIDE`` in service/style.py), so a decoder may mirror by up to one less (``padding_plan``).
MIN_FEATURE_SIDE = 4
# A full-size relu1_1 stage estimates the photo's feature statistics from every fourth position each
# way: a sixteenth of the products, the output 48-52 dB from every second position's (``Cascade``).
STATS_STRIDE = 4


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


class StyleEncoder(nn.Module):
    """Image RGB [0, 1] (N, 3, H, W) -> for each of ``levels``: mean (N, C) and covariance (N, C, C)
    of its VGG features, flattened as (mean_1, cov_1, mean_2, cov_2, ...)."""

    def __init__(self, vgg: nn.Module, levels: Sequence[str]):
        super().__init__()
        self.vgg, self.levels = vgg, list(levels)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        feats = self.vgg(image, self.levels)
        return tuple(t for level in self.levels for t in feature_stats(feats[level]))


def default_scales(levels: Sequence[str], coarse_scales: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """The default ``(coarse_scales, fine_scales)`` of a cascade of ``levels`` (coarse to fine; see
    ``Cascade``), or the fine scales that go with the given ``coarse_scales``. By default ``PYRAMID``
    for a shallow coarsest level (its features see at most 10 px), else none ([1]); when the next
    level is relu1_1, it paints the sizes of ``FINE_SCALES`` below the coarse ones (by default: the
    pyramid's 1/2 size, taken from the coarsest level)."""
    fine_level = len(levels) > 1 and levels[1] == "relu1_1"
    if coarse_scales is not None:
        coarse = check_scales(coarse_scales)
    elif layer_block(levels[0]) > 2:
        coarse = [1]
    else:
        coarse = [k for k in PYRAMID if not (fine_level and k in FINE_SCALES)]
    fine = [k for k in FINE_SCALES if k < coarse[-1]] if fine_level else []  # none below a [1]
    return coarse, fine


def check_scales(scales: Sequence[int], what: str = "coarse scales", examples: str = "16,8,4,2 or 1") -> list[int]:
    """``scales``: powers of two, strictly decreasing, e.g. (16, 8, 4, 2) or (1,); returned as a list.
    ``what`` and ``examples`` name them in the error (the coarse or the fine scales)."""
    scales = [int(s) for s in scales]
    if not scales or any(s < 1 or s & (s - 1) for s in scales) or scales != sorted(set(scales), reverse=True):
        raise ValueError(f"{what} must be decreasing powers of two (e.g. {examples}), not {scales}")
    return scales


class Cascade(nn.Module):
    """The serving graph: image (N, 3, H, W) in [0, 1] (H, W multiples of ``size_multiple``),
    ``strength`` (N,) in [0, 1], and the style's mean (N, C) and cov (N, C, C) for each of
    ``levels`` in order -> image (N, 3, H, W) in [0, 1].

    ``levels`` run coarse to fine; each encodes the previous level's output, matches the style's
    statistics there (``transform``: ``ot`` or ``wct``, see ``functions.transform_matrix``) and
    decodes it. Strength 0 is the decoders' reconstruction of the content.

    ``coarse_scales`` (decreasing powers of two): the coarsest level runs once per scale k, on the
    image shrunk k times (Gaussian pyramid), smallest first; between scales the result is enlarged
    (bicubic, ``enlarge``) and the detail the smaller copy lacked is added back from the photo (Laplacian
    pyramid), so a level whose features see 10 px paints strokes k times larger while the photo's
    fine detail survives for the finer levels. The style statistics are the same at every scale.
    ``(1,)`` (the default) is the plain cascade. The finer levels run at full size.
    ``shading_radius`` (> 0): each of the coarsest level's pyramid passes keeps its input's
    large-scale light and dark (``keep_shading``), so the style's colours follow the photo's objects
    instead of painting blotches across them; 0 lets the passes repaint the shading too.
    ``fine_scales`` (smaller than the last coarse scale, more than 1): the pyramid goes on at these
    sizes with the second level painting them (its own light and dark: it paints texture, not
    blotches), before that level's full-size stage. ``()`` (the default): none.

    ``stats_stride``: relu1_1 at full size or at a fine scale estimates the content's statistics from
    every ``stats_stride``-th position each way (``STATS_STRIDE``); the deeper levels and the coarsest
    level's pyramid passes (whose copies may be 4 features a side) from all of them.

    ``strength`` blends features (s * moved + (1 - s) * features) at the full-size levels, and
    images (s * painted + (1 - s) * input) at the pyramid's sizes: strength 0 is the full-size levels'
    reconstruction of the photo, not a chain of every size's reconstruction errors.
    """

    def __init__(
        self,
        vgg: nn.Module,
        decoders: Sequence[Decoder],
        transform: str = "wct",
        iters: int = NS_ITERS,
        coarse_scales: Sequence[int] = (1,),
        shading_radius: int = SHADING_RADIUS,
        stats_stride: int = STATS_STRIDE,
        fine_scales: Sequence[int] = (),
    ):
        super().__init__()
        if not 1 <= len(decoders) <= len(ENCODER_LAYERS):
            raise ValueError(f"1 to {len(ENCODER_LAYERS)} decoders, not {len(decoders)}")
        self.vgg, self.decoders = vgg, nn.ModuleList(decoders)
        self.levels = [d.layer for d in decoders]
        self.transform, self.iters = transform, iters
        self.coarse_scales = check_scales(coarse_scales)
        self.fine_scales = check_scales(fine_scales, "fine scales", "2 or 4,2") if len(fine_scales) else []
        if self.fine_scales:
            if len(decoders) < 2:
                raise ValueError("fine scales need a second level to paint them")
            if self.fine_scales[0] >= self.coarse_scales[-1]:
                raise ValueError(f"fine scales {self.fine_scales} must be below the coarse ones {self.coarse_scales}")
            if self.fine_scales[-1] < 2:
                raise ValueError(f"fine scales must be 2 or more (the full size is the stage's), not {fine_scales}")
        if shading_radius < 0:
            raise ValueError(f"shading radius must be 0 (off) or more, not {shading_radius}")
        self.shading_radius = int(shading_radius)
        if stats_stride < 1:
            raise ValueError(f"statistics stride must be 1 (every position) or more, not {stats_stride}")
        self.stats_stride = int(stats_stride)
        # the smallest copy must still be a whole multiple of the coarsest level's stride
        self.size_multiple = self.coarse_scales[0] * size_multiple(self.levels[0])

    def _decoded(
        self,
        x: Tensor,
        level: str,
        decoder: Decoder,
        mean: Tensor,
        factor: Tensor,
        strength: Tensor,
        stride: int = 1,
        mirror_once: bool = False,
    ) -> Tensor:
        """``x``'s features at ``level`` given the style's mean and ``style_factor``, blended by
        ``strength``, decoded (the transform folded into the decoder: ``Decoder.forward_mapped``);
        the features' own statistics from every ``stride``-th position each way."""
        feat = self.vgg(x, [level])[level]
        sample = self._every(x, feat, level, stride) if stride > 1 else feat
        m, b = statistics_map(*feature_stats(sample), mean, factor, strength, self.transform, self.iters)
        return decoder.forward_mapped(feat, m, b, mirror_once)

    def _every(self, x: Tensor, feat: Tensor, level: str, stride: int) -> Tensor:
        """``feat[:, :, ::stride, ::stride]``. relu1_1 is one convolution of the image, so there it is
        the same convolution at that stride: the same values, computed without a strided copy of
        the full-size features (two slices that took 6% of the graph's time at 512² on the CPU)."""
        conv = self.vgg.features[0]
        if level != "relu1_1" or not isinstance(conv, nn.Conv2d) or conv.stride != (1, 1):
            return feat[:, :, ::stride, ::stride]
        return F.relu(F.conv2d(self.vgg.normalize(x), conv.weight, conv.bias, stride, conv.padding))

    def _stage(self, x: Tensor, level: str, decoder: Decoder, mean: Tensor, factor: Tensor, strength: Tensor) -> Tensor:
        """One level at full size: the features blended by ``strength``, then decoded, the decoder
        mirroring its input once (``padding_plan``: the image changes only within a few pixels of
        the border). The pyramid's passes mirror before every convolution: at 1/16 size a two-pixel
        border is 32 pixels of the photo, and mirroring once there left streaks along its edges."""
        stride = self._stats_stride(level)
        return self._decoded(x, level, decoder, mean, factor, strength, stride, mirror_once=True).clamp(0.0, 1.0)

    def _stats_stride(self, level: str) -> int:
        return self.stats_stride if layer_block(level) == 1 else 1

    def _painted(
        self,
        x: Tensor,
        level: str,
        decoder: Decoder,
        mean: Tensor,
        factor: Tensor,
        strength: Tensor,
        shading: bool = True,
        stride: int = 1,
    ) -> Tensor:
        """One pyramid size: the fully painted image (given ``x``'s light and dark if ``shading`` and
        ``shading_radius``; the statistics from every ``stride``-th position) blended with its input by
        ``strength``, so that strength 0 passes the photo through (no decoder's reconstruction error at
        every size)."""
        painted = self._decoded(x, level, decoder, mean, factor, torch.ones_like(strength), stride)
        if shading and self.shading_radius:
            painted = keep_shading(painted, x, self.shading_radius)
        return blend(painted, x, strength).clamp(0.0, 1.0)

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
        return self.paint(image, strength, [mean_0, mean_1, mean_2, mean_3], [cov_0, cov_1, cov_2, cov_3])

    def paint(
        self,
        image: Tensor,
        strength: Tensor,
        means: Sequence[Tensor | None],
        covs: Sequence[Tensor | None],
        coarse_pass: Callable[[Tensor, int], Tensor | None] | None = None,
    ) -> Tensor:
        """``forward`` with the style's statistics as lists (one mean and cov per level, in order);
        ``coarse_pass(x, scale)``, if given, paints the coarsest level's pass at that scale in place
        of the statistics transform wherever it returns an image (``StyleSwapCascade``)."""
        # the style's part of each level's transform, once (the pyramid applies it at every size)
        factors = [style_factor(cov, self.transform, self.iters) for cov in covs[: len(self.levels)]]
        stats = list(zip(means, factors))
        first = self.levels[0], self.decoders[0], *stats[0], strength
        if self.coarse_scales == [1] and coarse_pass is None:
            x = self._stage(image, *first)
        else:

            def paint(x: Tensor, scale: int) -> Tensor:
                painted = coarse_pass(x, scale) if coarse_pass is not None else None
                if painted is not None:
                    return painted
                if scale in self.fine_scales:  # the second level, painting its own light and dark
                    level = self.levels[1]
                    stride = self._stats_stride(level)
                    return self._painted(x, level, self.decoders[1], *stats[1], strength, shading=False, stride=stride)
                return self._painted(x, *first)

            x = laplacian_pyramid(image, self.coarse_scales + self.fine_scales, paint)
        for level, decoder, (mean, factor) in zip(self.levels[1:], self.decoders[1:], stats[1:]):
            x = self._stage(x, level, decoder, mean, factor, strength)
        return x
