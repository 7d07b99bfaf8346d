"""Style-transfer maths as small pure tensor functions (AdaIN, Huang & Belongie 2017; Gatys et al.).

Feature maps are ``(N, C, H, W)``; channel statistics are ``(N, C)``. Nothing here holds state,
reads globals or does I/O, so each function is tested on its own and shared by the AdaIN trainer,
the Gatys optimisation reference and the quality report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5

# The exact statistics the service (numpy) and the exported decoder graph agree on.
STYLE_STATS_DEFINITION = (
    "per-channel statistics of VGG features (N, C, H, W) over H and W: mean = mean_{H,W}(f); "
    "std = sqrt(mean_{H,W}((f - mean)^2) + 1e-5) (biased variance, eps inside the sqrt); float32"
)


def mean_std(feat: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of ``feat`` (N, C, H, W) over H and W -> ``(mean, std)``, each (N, C).

    Contract with the numpy service: ``mean = f.mean((H, W))``,
    ``std = sqrt(((f - mean) ** 2).mean((H, W)) + eps)`` — the *biased* variance (divide by H*W)
    with ``eps`` added inside the square root.
    """
    mean = feat.mean(dim=(2, 3))
    var = feat.var(dim=(2, 3), unbiased=False)
    return mean, (var + eps).sqrt()


def adain(content_feat: Tensor, style_mean: Tensor, style_std: Tensor, eps: float = EPS) -> Tensor:
    """Re-normalise ``content_feat`` (N, C, H, W) to the style's channel mean/std (each (N, C))."""
    c_mean, c_std = mean_std(content_feat, eps)
    normalized = (content_feat - c_mean[..., None, None]) / c_std[..., None, None]
    return normalized * style_std[..., None, None] + style_mean[..., None, None]


def blend(stylized: Tensor, content_feat: Tensor, strength: Tensor) -> Tensor:
    """``strength * stylized + (1 - strength) * content_feat``; ``strength`` (N,) in [0, 1]."""
    s = strength.reshape(-1, 1, 1, 1).to(stylized.dtype)
    return s * stylized + (1 - s) * content_feat


def gram_matrix(feat: Tensor) -> Tensor:
    """Gram matrix of ``feat`` (N, C, H, W) -> (N, C, C), normalised by C * H * W."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(output_feat: Tensor, target_feat: Tensor) -> Tensor:
    """Mean squared error between feature maps of equal shape."""
    return F.mse_loss(output_feat, target_feat)


def style_loss_mean_std(output_feats: Mapping[str, Tensor] | Sequence[Tensor],
                        style_feats: Mapping[str, Tensor] | Sequence[Tensor],
                        eps: float = EPS) -> Tensor:
    """Sum over layers of MSE(channel means) + MSE(channel stds) (AdaIN's style loss).

    Takes two dicts with the same keys (layer name -> (N, C, H, W)) or two equal-length sequences;
    the spatial sizes of output and style may differ.
    """
    total = None
    for out, sty in _pairs(output_feats, style_feats):
        o_mean, o_std = mean_std(out, eps)
        s_mean, s_std = mean_std(sty, eps)
        term = F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)
        total = term if total is None else total + term
    return _require(total)


def style_loss_gram(output_feats: Mapping[str, Tensor] | Sequence[Tensor],
                    style_feats: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
    """Sum over layers of MSE between Gram matrices (Gatys et al.); spatial sizes may differ."""
    total = None
    for out, sty in _pairs(output_feats, style_feats):
        term = F.mse_loss(gram_matrix(out), gram_matrix(sty))
        total = term if total is None else total + term
    return _require(total)


def total_variation(img: Tensor) -> Tensor:
    """Mean absolute difference of vertically and horizontally neighbouring pixels of (N, C, H, W)."""
    dh = (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().mean()
    dw = (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().mean()
    return dh + dw


def _pairs(a, b) -> list[tuple[Tensor, Tensor]]:
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("pass two dicts or two sequences of feature maps")
    if isinstance(a, Mapping):
        if set(a) != set(b):
            raise ValueError(f"layers differ: {sorted(a)} vs {sorted(b)}")
        return [(a[k], b[k]) for k in a]
    if len(a) != len(b):
        raise ValueError(f"{len(a)} output layers vs {len(b)} style layers")
    return list(zip(a, b))


def _require(total: Tensor | None) -> Tensor:
    if total is None:
        raise ValueError("no feature layers given")
    return total
