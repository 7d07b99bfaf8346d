"""Patch matching as pure tensor functions: the style's own shapes for the stylizer graph.

A linear map of feature statistics (``functions.transform_matrix``) moves a style's colours and
fine grain, not its motifs. Style-swap (Chen & Schmidt 2016) does: each 3x3 patch of the content's
features is replaced by the style patch it correlates with best (normalised cross-correlation),
overlapping patches averaged. As in Avatar-Net's style decorator (Sheng et al. 2018), both sides are
whitened first, so the match follows structure rather than colour, and the style's own (unwhitened)
patches are put in. The same matches then copy the style's pixels (``overlap_average`` of pixel
blocks), which the stylizer adds as detail where a decoder would blur them.

Where the photo is flat every position would pick the same patch (the one closest to its tone); a
prior (``best_patches``) then prefers squares of the style's own grid (``home_patches``), so a flat
sky gets the style's own strokes and stripes, not one patch repeated.

Every step is a slice, a matrix product, an argmax or a gather, so the graph exports to ONNX; its
cost is content positions x style patches x 9 C multiply-adds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from training.style.functions import feature_stats, regularised, sqrt_and_inv_sqrt

TONE_SPREAD = 0.25  # the light's spread (0..1) at which a tone difference of one spread costs ``tone``
OFFSETS = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]  # a 3x3 patch's cells around its centre


def whitened(feat: Tensor, eps: float) -> Tensor:
    """``feat`` (N, C, H, W) centred and whitened by its own ``regularised`` covariance."""
    n, c, h, w = feat.shape
    mean, cov = feature_stats(feat)
    _, inv_root = sqrt_and_inv_sqrt(regularised(cov, eps))
    return (inv_root @ (feat.reshape(n, c, h * w) - mean[..., None])).reshape(n, c, h, w)


def patch_columns(feat: Tensor, stride: int = 1) -> Tensor:
    """Every 3x3 patch of ``feat`` (N, C, H, W) centred at every ``stride``-th inner position, as
    columns (N, 9 C, P), P = nh * nw with nh = (H - 3) // stride + 1 (row-major): nine shifted
    slices, the patch's cells in ``OFFSETS`` order."""
    h, w = feat.shape[-2:]
    nh, nw = (h - 3) // stride + 1, (w - 3) // stride + 1
    cells = [
        feat[:, :, 1 + a : 1 + a + (nh - 1) * stride + 1 : stride, 1 + b : 1 + b + (nw - 1) * stride + 1 : stride]
        for a, b in OFFSETS
    ]
    return torch.cat(cells, 1).flatten(2)


def grid_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """The (nh, nw) grid of patch centres ``patch_columns`` takes from an (h, w) feature map."""
    return (h - 3) // stride + 1, (w - 3) // stride + 1


def divmod_tensor(x: Tensor, d: int) -> tuple[Tensor, Tensor]:
    """``(x // d, x % d)`` of an integer tensor, ``d`` made a tensor: the ONNX exporter cannot divide
    by a symbolic size (one that depends on an input's shape) given as a number."""
    divisor = torch.full((), d, dtype=x.dtype, device=x.device)
    quotient = torch.div(x, divisor, rounding_mode="floor")
    return quotient, x - quotient * divisor


def home_patches(h: int, w: int, nh: int, nw: int, block: int, device: torch.device) -> Tensor:
    """The style patch each of (h, w) content positions falls back on where the photo is flat:
    (h * w,) indices into the (nh, nw) style grid. The content is cut into ``block`` x ``block``
    squares and each square copies a square of the style's grid whole, the squares dealt out in a
    fixed scattered order: within a square the style's own arrangement (its stripes and strokes
    continue), across squares none of its composition (a face in a portrait never reappears whole)."""
    bh, bw = max(1, nh // block), max(1, nw // block)  # the style's whole squares
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    (br, r), (bc, c) = divmod_tensor(rows, block), divmod_tensor(cols, block)
    square = divmod_tensor(br[:, None] * 7 + bc[None, :] * 3 + (br[:, None] * bc[None, :]) * 5 + 11, bh * bw)[1]
    sr, sc = divmod_tensor(square, bw)
    row = (sr * block + r[:, None]).clamp(max=nh - 1)
    col = (sc * block + c[None, :]).clamp(max=nw - 1)
    return (row * nw + col).reshape(h * w)


def patch_tones(image: Tensor, cell: int, stride: int | None = None) -> Tensor:
    """The light (0..1) of every 3x3 patch of an image's feature grid: (N, P). ``image``
    (N, 3, H, W) with ``cell`` pixels per feature position. ``stride`` None: every position, its
    patch mirrored at the edges (the content's queries); else every ``stride``-th inner position
    (``patch_columns``' grid: the style's kernels)."""
    light = F.avg_pool2d(image.mean(1, keepdim=True), cell)
    if stride is None:
        return F.avg_pool2d(F.pad(light, (1, 1, 1, 1), mode="reflect"), 3, stride=1).flatten(1)
    return F.avg_pool2d(light, 3, stride=stride).flatten(1)


def tone_penalty(ours: Tensor, theirs: Tensor) -> Tensor:
    """(N, P, h*w): how far each style patch's light is from the light the content's patch asks
    for: the content's light standardised and laid onto the style's own spread, squared, in units
    of ``TONE_SPREAD``. A style of one light at the patches' size (stripes finer than a patch) asks
    nothing; a style of dark and light regions asks for the photo's dark and light."""
    z = (ours - ours.mean(1, keepdim=True)) / ours.std(1, keepdim=True).clamp_min(1e-3)
    wanted = theirs.mean(1, keepdim=True) + theirs.std(1, keepdim=True) * z  # (N, h*w)
    return ((theirs[:, :, None] - wanted[:, None, :]) / TONE_SPREAD).square()


def best_patches(
    content: Tensor,
    style: Tensor,
    stride: int = 1,
    prior: float = 0.0,
    block: int = 6,
    tones: tuple[Tensor, Tensor] | None = None,
    tone: float = 0.0,
) -> tuple[Tensor, int]:
    """For every position of ``content`` (N, C, h, w) the style patch of ``style`` (N, C, hs, ws)
    whose 3x3 patch correlates best with the content's 3x3 patch there (the content mirrored by one
    position at its edges; the style's patches normalised to unit length): indices (N, h * w) into
    the style's patch grid (``grid_size``), and that grid's width nw.

    ``prior`` > 0: the position's ``home_patches`` patch (squares of ``block`` positions) wins unless
    another correlates better with the content patch's *structure* (its deviation from its own mean)
    by more than ``prior`` times the mean length of that structure over the image: decisive where
    the photo is flat (no structure, whatever its tone), negligible where it has edges or texture.

    ``tones`` (the content's and the style's ``patch_tones``) and ``tone`` > 0: every score first
    loses ``tone`` times the mean query length times ``tone_penalty``, so the matches also follow
    the photo's light and dark where the style has dark and light regions."""
    n, c, h, w = content.shape
    nh, nw = grid_size(*style.shape[-2:], stride)
    kernels = patch_columns(style, stride)
    kernels = kernels / torch.linalg.vector_norm(kernels, dim=1, keepdim=True).clamp_min(1e-12)
    queries = patch_columns(F.pad(content, (1, 1, 1, 1), mode="reflect"))  # (N, 9C, h*w)
    scores = kernels.transpose(1, 2) @ queries  # (N, P, h*w)
    if tones is not None and tone > 0:
        # in units of the scores: a query's score is its length times a cosine
        scale = torch.linalg.vector_norm(queries, dim=1).mean(1).reshape(n, 1, 1)
        scores = scores - tone * scale * tone_penalty(*tones)
    best = scores.argmax(1)
    if prior <= 0:
        return best, nw
    # <kernel, query - its mean cell> = score - <the kernel's cells summed, the query's mean cell>
    mean_cell = queries.reshape(n, len(OFFSETS), c, h * w).mean(1)  # (N, C, h*w)
    summed = kernels.reshape(n, len(OFFSETS), c, -1).sum(1)  # (N, C, P)
    structure = scores - summed.transpose(1, 2) @ mean_cell  # the tone penalty stays in
    spread = torch.linalg.vector_norm(queries - mean_cell.repeat(1, len(OFFSETS), 1), dim=1)  # (N, h*w)
    home = home_patches(h, w, nh, nw, block, content.device)
    # structure[:, home[j], j] for every position j, as one Gather on the flattened (P, h*w) plane
    # (GatherElements would do, but ONNX's reference evaluator, which checks the fp16 variant, cannot)
    at_home = structure.flatten(1).index_select(1, home * (h * w) + torch.arange(h * w, device=home.device))
    # (N, 1); the floor: float32 rounding of ``structure`` where the whole photo is flat
    margin = prior * spread.mean(1, keepdim=True) + 1e-5 * torch.linalg.vector_norm(queries, dim=1).amax(
        1, keepdim=True
    )
    return torch.where(at_home + margin >= structure.amax(1), home, best), nw


def overlap_average(grid: Tensor, best: Tensor, nw: int, stride: int, h: int, w: int, cell: int = 1) -> Tensor:
    """The style's values put where the content's patches matched, overlaps averaged: ``grid``
    (N, K, hs, ws) holds the style's values per feature position, with K = k * cell * cell for
    blocks of cell x cell pixels (``F.pixel_unshuffle``) or K = C features with ``cell`` 1;
    ``best`` (N, h * w) and ``nw`` from ``best_patches``. Each position gets the nine proposals of
    the patches that cover it (its own and its neighbours', the edges' repeated), each the style
    value at the same offset from that patch's matched centre -> (N, K, h, w).

    With ``cell`` > 1 a proposal's weight falls off linearly with the pixel's distance from its
    patch's centre (a tent over the 3-cell patch), so neighbouring blocks fade into each other
    instead of meeting at seams; with ``cell`` 1 the nine are averaged equally (style-swap)."""
    n, k, hs, ws = grid.shape
    # (N * hs * ws, K): each proposal one Gather of rows (offset by each image's start)
    rows_of = grid.reshape(n, k, hs * ws).transpose(1, 2).reshape(n * hs * ws, k)
    start = (torch.arange(n, device=grid.device) * (hs * ws)).reshape(n, 1, 1)
    row, col = divmod_tensor(best, nw)
    centre_row, centre_col = row * stride + 1, col * stride + 1  # (N, h*w), in the style's feature grid
    centre_row, centre_col = centre_row.reshape(n, h, w), centre_col.reshape(n, h, w)
    device = grid.device
    offsets = torch.arange(cell, dtype=grid.dtype, device=device) - (cell - 1) / 2
    total, weights = 0.0, 0.0
    for a, b in OFFSETS:
        # the patch centred at (i - a, j - b) covers (i, j) with its cell (a, b)
        rows = (torch.arange(h, device=device) - a).clamp(0, h - 1)
        cols = (torch.arange(w, device=device) - b).clamp(0, w - 1)
        r = centre_row.index_select(1, rows).index_select(2, cols) + a
        c = centre_col.index_select(1, rows).index_select(2, cols) + b
        index = (start + r * ws + c).reshape(n * h * w)
        proposal = rows_of.index_select(0, index).reshape(n, h, w, k).permute(0, 3, 1, 2)
        if cell == 1:
            total = total + proposal
            continue
        wy = (1.5 * cell - (a * cell + offsets).abs()).clamp_min(0)  # (cell,)
        wx = (1.5 * cell - (b * cell + offsets).abs()).clamp_min(0)
        weight = (wy[:, None] * wx[None, :]).reshape(1, 1, cell * cell, 1, 1)
        total = total + proposal.reshape(n, k // (cell * cell), cell * cell, h, w) * weight
        weights = weights + weight
    if cell == 1:
        return total / len(OFFSETS)
    return (total / weights).reshape(n, k, h, w)


def pixel_patches(style_image: Tensor, best: Tensor, nw: int, stride: int, h: int, w: int, cell: int) -> Tensor:
    """The style's pixels laid out as the matches say: ``style_image`` (N, 3, hs * cell, ws * cell),
    one cell x cell block per style feature position -> (N, 3, h * cell, w * cell)."""
    blocks = F.pixel_unshuffle(style_image, cell)  # (N, 3 cell^2, hs, ws)
    return F.pixel_shuffle(overlap_average(blocks, best, nw, stride, h, w, cell), cell)
