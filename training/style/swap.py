"""The exported stylizer with the style's shapes: ``Cascade`` with one coarse pass that swaps the
style's patches in (``patches.py``) instead of moving its statistics, and the style's own pixels,
laid out by the same matches, added as detail at full size.

Why: the statistics transform at relu2_1 and relu1_1 carries a style's palette and grain but not
its strokes, blobs and stripes (docs/style-transfer.md, "The style's shapes").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from training.style.functions import COV_EPS, STYLE_COV_EPS, blend
from training.style.levels import size_multiple
from training.style.model import Cascade
from training.style.patches import best_patches, overlap_average, patch_tones, pixel_patches, whitened
from training.style.pyramid import half_size, keep_shading, smooth


@dataclass(frozen=True)
class PatchSettings:
    """How the stylizer uses the style's patches.

    - ``scale``: the pyramid scale (one of the cascade's coarse scales) at which the coarsest level
      swaps patches (None: its first, the coarsest);
    - ``prior``: how strongly a flat region keeps the style's own arrangement (``best_patches``);
    - ``stride``: every how many style positions a patch is taken;
    - ``block``: the side, in patches, of the style's squares a flat region copies whole
      (``home_patches``);
    - ``shading``: the patch pass keeps its input's large-scale light and dark, as the cascade's
      statistics passes do (``keep_shading`` at the cascade's radius);
    - ``detail_gain``: how much of the matched style pixels' detail is added at full size (0: none);
    - ``detail_radius``: the detail is what two box filters of side 2 r + 1 remove from them;
    - ``tone``: how much a match also follows the photo's light and dark (``tone_penalty``; 0: the
      whitened structure alone)."""

    scale: int | None = None
    prior: float = 0.2
    stride: int = 1
    block: int = 6
    shading: bool = False
    detail_gain: float = 1.0
    detail_radius: int = 4
    tone: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PATCHES = PatchSettings()


def inner_features(vgg: nn.Module, image: Tensor, level: str) -> Tensor:
    """``vgg``'s features of ``image`` at ``level``, computed on the image mirrored by two features'
    worth of pixels and cropped back, so the edges' features do not see the convolutions' zero
    padding (which the matching would take for edges and fill with the style's outlines)."""
    m = size_multiple(level)
    feat = vgg(F.pad(image, (2 * m,) * 4, mode="reflect"), [level])[level]
    return feat[..., 2:-2, 2:-2]


def add_detail(image: Tensor, synthesis: Tensor, strength: Tensor, gain: float, radius: int) -> Tensor:
    """``image`` plus ``gain * strength`` times the detail of ``synthesis`` (what ``smooth`` at
    ``radius`` removes from it), clamped to [0, 1]. Images (N, 3, H, W) of one size."""
    s = strength.reshape(-1, 1, 1, 1).to(image.dtype)
    return (image + gain * s * (synthesis - smooth(synthesis, radius))).clamp(0.0, 1.0)


class StyleSwapCascade(nn.Module):
    """Inputs: image (N, 3, H, W), strength (N,), style (N, 3, Hs, Ws) in [0, 1] with Hs, Ws
    multiples of ``cell``, then the style's mean and cov for each level as ``Cascade`` takes them.

    The cascade runs as ever, but for its coarsest level's pass at ``settings.scale``: there the
    image's features and the style's (the style shrunk by the same factor, Gaussian pyramid), both
    whitened, are matched patch by patch, the style's own feature patches put in (overlaps
    averaged) and decoded, and the result blended with the pass's input by ``strength``. After the
    cascade, the style's pixels laid out by the same matches (blocks of ``cell`` pixels, one per
    feature position) give the detail ``add_detail`` adds."""

    def __init__(self, cascade: Cascade, settings: PatchSettings = DEFAULT_PATCHES):
        super().__init__()
        if settings.scale is None:
            settings = replace(settings, scale=cascade.coarse_scales[0])
        if settings.scale not in cascade.coarse_scales:
            raise ValueError(f"patch scale {settings.scale} must be one of the coarse scales {cascade.coarse_scales}")
        if (
            settings.prior < 0
            or settings.detail_gain < 0
            or settings.stride < 1
            or settings.detail_radius < 1
            or settings.block < 1
            or settings.tone < 0
        ):
            raise ValueError(f"patch settings out of range: {settings}")
        self.cascade, self.settings = cascade, settings
        self.levels, self.size_multiple = cascade.levels, cascade.size_multiple
        self.cell = settings.scale * size_multiple(cascade.levels[0])

    # A fixed signature (no *args), as Cascade's.
    def forward(
        self,
        image: Tensor,
        strength: Tensor,
        style: Tensor,
        mean_0: Tensor,
        cov_0: Tensor,
        mean_1: Tensor | None = None,
        cov_1: Tensor | None = None,
        mean_2: Tensor | None = None,
        cov_2: Tensor | None = None,
        mean_3: Tensor | None = None,
        cov_3: Tensor | None = None,
    ) -> Tensor:
        cfg, cascade = self.settings, self.cascade
        level, decoder = cascade.levels[0], cascade.decoders[0]
        matched = {}

        def coarse_pass(x: Tensor, scale: int) -> Tensor | None:
            if scale != cfg.scale:
                return None
            shrunk = style
            for _ in range(scale.bit_length() - 1):
                shrunk = half_size(shrunk)
            theirs = inner_features(cascade.vgg, shrunk, level)
            ours = inner_features(cascade.vgg, x, level)
            m = size_multiple(level)
            tones = (patch_tones(x, m), patch_tones(shrunk, m, cfg.stride)) if cfg.tone else None
            best, nw = best_patches(
                whitened(ours, COV_EPS),
                whitened(theirs, STYLE_COV_EPS),
                cfg.stride,
                cfg.prior,
                cfg.block,
                tones,
                cfg.tone,
            )
            h, w = ours.shape[-2:]
            matched.update(best=best, nw=nw, h=h, w=w)
            painted = decoder(overlap_average(theirs, best, nw, cfg.stride, h, w))
            if cfg.shading and cascade.shading_radius:
                painted = keep_shading(painted, x, cascade.shading_radius)
            return blend(painted, x, strength).clamp(0.0, 1.0)

        means, covs = [mean_0, mean_1, mean_2, mean_3], [cov_0, cov_1, cov_2, cov_3]
        out = cascade.paint(image, strength, means, covs, coarse_pass)
        if not cfg.detail_gain:
            return out
        pixels = pixel_patches(style, matched["best"], matched["nw"], cfg.stride, matched["h"], matched["w"], self.cell)
        return add_detail(out, pixels, strength, cfg.detail_gain, cfg.detail_radius)
