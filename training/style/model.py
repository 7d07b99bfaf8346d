"""The exported graphs of universal style transfer, the style encoder and the cascade, as pure
``nn.Module``s (no I/O; every size a constructor argument), and the cascade's default pyramid.

Li et al. 2017 ("Universal Style Transfer via Feature Transforms"): decoders trained only to
*reconstruct* images from VGG features (``decoder.py``), and a closed-form transform that gives the
content's features the style's mean and covariance, level by level from coarse to fine (levels:
``levels.py``). No style is seen in training, so any style works that the statistics can describe.

- ``StyleEncoder``: image -> (mean, covariance) of the VGG features at every level: the exported
  graph that computes a style's statistics (presets and uploads alike).
- ``Cascade``: the exported serving graph: for each level, coarse to fine, encode the current
  image, match the style's statistics (``strength`` blends), decode; the output feeds the next level.
  The coarsest level may run on a Laplacian pyramid of the image first (``coarse_scales``), which
  gives a shallow level the reach of a deeper one: larger strokes without a deeper decoder; the
  next level may paint the pyramid's last sizes before its full-size stage (``fine_scales``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.style.decoder import Decoder
from training.style.functions import NS_ITERS, blend, feature_stats, statistics_map, style_factor
from training.style.levels import ENCODER_LAYERS, layer_block, size_multiple
from training.style.pyramid import keep_shading, laplacian_pyramid

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
# A full-size relu1_1 stage estimates the photo's feature statistics from every fourth position each
# way: a sixteenth of the products, the output 48-52 dB from every second position's (``Cascade``).
STATS_STRIDE = 4


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
