"""Style-transfer maths as small pure tensor functions: the universal feature transform (Li et al.
2017, whitening-colouring, and the Gaussian optimal-transport map) and Gatys et al.'s losses.

Feature maps are ``(N, C, H, W)``; channel statistics are ``(N, C)``. Nothing here holds state,
reads globals or does I/O, so each function is tested on its own and shared by the trainer, the
exported graphs, the Gatys optimisation reference and the quality report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5
COV_EPS = 1e-2  # the content covariance's regularisation, relative to its Frobenius norm (see ``regularised``)
# The style's, smaller: colouring adds this much variance to every one of the C directions, so a
# larger value paints a smooth style's empty directions with noise (measured in docs/style-transfer.md)
STYLE_COV_EPS = 1e-3
NS_ITERS = 20  # the most Newton-Schulz iterations a matrix square root gets (see ``ns_iters``)

# The statistics the exported style encoder computes and the stylizer graph consumes.
STYLE_STATS_DEFINITION = (
    "per VGG level, over the H*W positions of its features (C, H, W): mean = mean(f) (C,); "
    "cov = mean((f - mean)(f - mean)^T) (C, C), the biased covariance; float32. Mixing styles "
    "with weights w_i (sum 1) mixes their distributions: mean = sum w_i mean_i, "
    "cov = sum w_i (cov_i + mean_i mean_i^T) - mean mean^T"
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


def feature_stats(feat: Tensor) -> tuple[Tensor, Tensor]:
    """Channel mean (N, C) and covariance (N, C, C) of ``feat`` (N, C, H, W) over H*W (biased)."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    mean = f.mean(dim=2)
    # E[f f^T] - mean mean^T: no centred copy of the features (a full-size pass at every level)
    return mean, f @ f.transpose(1, 2) / (h * w) - mean[:, :, None] * mean[:, None, :]


def regularised(cov: Tensor, eps: float = COV_EPS) -> Tensor:
    """``cov + eps * ||cov||_F * I`` (N, C, C): no direction's variance below ``eps`` of the largest
    scale, so whitening never amplifies a near-empty direction by more than ~1/sqrt(eps)."""
    c = cov.shape[-1]
    scale = torch.linalg.matrix_norm(cov, keepdim=True).clamp_min(1e-12)  # Frobenius, (N, 1, 1)
    return cov + eps * scale * torch.eye(c, dtype=cov.dtype, device=cov.device)


def sqrt_and_inv_sqrt(a: Tensor, iters: int = NS_ITERS) -> tuple[Tensor, Tensor]:
    """Square root and inverse square root of symmetric positive definite ``a`` (N, C, C).

    Coupled Newton-Schulz iterations (Higham 2008) on ``a / ||a||_F``, whose eigenvalues lie in
    (0, 1]: only matrix products, so the transform exports to ONNX without an eig operator and runs
    on the GPU. Eigenvalues far below ``||a||_F / 1.5**iters`` converge last; ``regularised`` keeps
    them within reach.
    """
    c = a.shape[-1]
    norm = torch.linalg.matrix_norm(a, keepdim=True).clamp_min(1e-12)  # (N, 1, 1)
    eye = torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a / norm, eye
    for _ in range(iters):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    root = norm.sqrt()
    return y * root, z / root


def style_factor(
    style_cov: Tensor, kind: str = "wct", iters: int = NS_ITERS, style_eps: float = STYLE_COV_EPS
) -> Tensor:
    """The part of ``transform_matrix`` that depends on the style alone (N, C, C), so that a graph
    applying one style several times (the pyramid's passes) computes it once: for ``wct`` the
    square root of the ``regularised`` style covariance, for ``ot`` that covariance itself."""
    s_cov = regularised(style_cov, style_eps)
    if kind == "wct":
        return sqrt_and_inv_sqrt(s_cov, ns_iters(style_eps, s_cov.shape[-1], iters))[0]
    if kind == "ot":
        return s_cov
    raise ValueError(f"transform must be 'ot' or 'wct', not {kind!r}")


def ns_iters(eps: float, channels: int, most: int = NS_ITERS) -> int:
    """Newton-Schulz iterations for a ``regularised(cov, eps)`` of ``channels`` channels: enough
    for its smallest possible eigenvalue, and two more, at most ``most``.

    ``sqrt_and_inv_sqrt`` divides by the Frobenius norm, so the regularisation keeps every
    eigenvalue at or above eps / (1 + eps sqrt(C)); the coupled iteration acts on each eigenvalue
    alone (its iterates are polynomials in the matrix), so the scalar iteration on that smallest
    value tells when all have converged (to 1e-7, float32's resolution): 12 for the content's
    10^-2, 15 for the style's 10^-3, whatever C (each took 20 before, for the same matrices to
    float32 precision)."""
    lam = eps / (1.0 + eps * channels**0.5)
    y, z = lam, 1.0
    for k in range(1, most + 1):
        t = 0.5 * (3.0 - z * y)
        y, z = y * t, t * z
        if abs(y / lam**0.5 - 1.0) < 1e-7:
            return min(k + 2, most)
    return most


def transform_matrix_from(
    content_cov: Tensor, factor: Tensor, kind: str = "wct", iters: int = NS_ITERS, eps: float = COV_EPS
) -> Tensor:
    """``transform_matrix`` given the style's ``style_factor``; ``iters``: the most Newton-Schulz
    iterations (the content's square roots get what its regularisation needs, ``ns_iters``)."""
    c_cov = regularised(content_cov, eps)
    c_root, c_inv_root = sqrt_and_inv_sqrt(c_cov, ns_iters(eps, c_cov.shape[-1], iters))
    if kind == "wct":
        return factor @ c_inv_root
    if kind == "ot":
        middle, _ = sqrt_and_inv_sqrt(c_root @ factor @ c_root, iters)
        return c_inv_root @ middle @ c_inv_root
    raise ValueError(f"transform must be 'ot' or 'wct', not {kind!r}")


def transform_matrix(
    content_cov: Tensor,
    style_cov: Tensor,
    kind: str = "wct",
    iters: int = NS_ITERS,
    eps: float = COV_EPS,
    style_eps: float = STYLE_COV_EPS,
) -> Tensor:
    """The linear map A (N, C, C) taking centred content features to the style's covariance.

    - ``wct``: whitening then colouring (Li et al. 2017): A = S^1/2 C^-1/2;
    - ``ot``: the optimal-transport (Monge) map between the two Gaussians, the one of all maps
      with A C A^T = S that moves the features least: A = C^-1/2 (C^1/2 S C^1/2)^1/2 C^-1/2.
    Both covariances are ``regularised`` first: the content's by ``eps``, the style's by ``style_eps``.
    """
    return transform_matrix_from(content_cov, style_factor(style_cov, kind, iters, style_eps), kind, iters, eps)


def transform_matrix_eigh(
    content_cov: Tensor, style_cov: Tensor, kind: str = "wct", eps: float = COV_EPS, style_eps: float = STYLE_COV_EPS
) -> Tensor:
    """``transform_matrix`` through float64 eigendecompositions: the reference the exported
    Newton-Schulz graph is checked against."""

    def powers(a: Tensor) -> tuple[Tensor, Tensor]:
        vals, vecs = torch.linalg.eigh(a)
        vals = vals.clamp_min(0)
        root = (vecs * vals.sqrt()[..., None, :]) @ vecs.transpose(-1, -2)
        inv = (vecs * vals.clamp_min(1e-300).rsqrt()[..., None, :]) @ vecs.transpose(-1, -2)
        return root, inv

    c_cov, s_cov = regularised(content_cov.double(), eps), regularised(style_cov.double(), style_eps)
    c_root, c_inv_root = powers(c_cov)
    if kind == "wct":
        return powers(s_cov)[0] @ c_inv_root
    if kind == "ot":
        return c_inv_root @ powers(c_root @ s_cov @ c_root)[0] @ c_inv_root
    raise ValueError(f"transform must be 'ot' or 'wct', not {kind!r}")


def statistics_map(
    content_mean: Tensor,
    content_cov: Tensor,
    style_mean: Tensor,
    factor: Tensor,
    strength: Tensor,
    kind: str = "wct",
    iters: int = NS_ITERS,
    eps: float = COV_EPS,
) -> tuple[Tensor, Tensor]:
    """The affine map ``(m (N, C, C), b (N, C, 1))`` with ``m f + b`` = the content features ``f``
    (whose mean and covariance are given) moved to the style's mean (N, C) and covariance (its
    ``style_factor``, (N, C, C)), blended with the untouched features by ``strength`` (N,) in [0, 1]:
    ``s (a (f - content_mean) + style_mean) + (1 - s) f``, folded onto C x C matrices so that the
    full-size features are read once (or not at all: see ``Decoder.forward_mapped``)."""
    c = content_cov.shape[-1]
    a = transform_matrix_from(content_cov, factor, kind, iters, eps)  # (N, C, C)
    s = strength.reshape(-1, 1, 1).to(a.dtype)
    m = s * a + (1 - s) * torch.eye(c, dtype=a.dtype, device=a.device)
    b = s * (style_mean[..., None] - a @ content_mean[..., None])  # (N, C, 1)
    return m, b


def blend(stylized: Tensor, content_feat: Tensor, strength: Tensor) -> Tensor:
    """``strength * stylized + (1 - strength) * content_feat``; ``strength`` (N,) in [0, 1]."""
    s = strength.reshape(-1, 1, 1, 1).to(stylized.dtype)
    return s * stylized + (1 - s) * content_feat


def psnr(output: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1], per image (N,)."""
    mse = (output.float() - target.float()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def gram_matrix(feat: Tensor) -> Tensor:
    """Gram matrix of ``feat`` (N, C, H, W) -> (N, C, C), normalised by C * H * W."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(output_feat: Tensor, target_feat: Tensor) -> Tensor:
    """Mean squared error between feature maps of equal shape."""
    return F.mse_loss(output_feat, target_feat)


def style_loss_mean_std(
    output_feats: Mapping[str, Tensor] | Sequence[Tensor],
    style_feats: Mapping[str, Tensor] | Sequence[Tensor],
    eps: float = EPS,
) -> Tensor:
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


def style_loss_gram(
    output_feats: Mapping[str, Tensor] | Sequence[Tensor], style_feats: Mapping[str, Tensor] | Sequence[Tensor]
) -> Tensor:
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
