"""The style graphs through ONNX: ``style_encoder.onnx`` and ``stylizer.onnx`` exported and checked
against PyTorch, the stylizer's fp16 variant scored, and the Newton-Schulz transform checked
against a float64 eigendecomposition on real features."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.manifest import Variant
from service.style import STYLE, stats_names, style_picture
from training.onnx_export import ExportResult, ParityError, export_checked, fp16_parity, fp16_variant, fp16_verdict
from training.style.decoder import MIN_FEATURE_SIDE
from training.style.functions import transform_matrix, transform_matrix_eigh
from training.style.model import Cascade, StyleEncoder
from training.style.swap import StyleSwapCascade

ATOL = 1e-4
# fp32 convolutions accumulate rounding error relative to the magnitude of their outputs; VGG
# features of real weights reach ~1e3 with the HED normalisation (0-255 inputs), so the style
# encoder's statistics are checked relative to their peak (covariances reach ~1e5), and the
# stylizer, whose image passes through several levels, to 1e-3 of the [0, 1] range.
STATS_REL_ATOL = 2e-5
STYLIZER_ATOL = 1e-3
# The Newton-Schulz transform must agree with float64 eigendecompositions to this relative
# (Frobenius) error on real features.
TRANSFORM_RTOL = 1e-2


def export_style_encoder(encoder: StyleEncoder, path: Path, log: Callable[[str], None]) -> ExportResult:
    """``image`` (N, 3, H, W) -> mean and cov per level; dynamic batch, height and width."""
    dims = _dims()
    example = (_images(2, 96, 128, seed=1),)
    checks = [(_images(1, 72, 56, seed=2),), (_images(3, 64, 88, seed=3),)]
    with torch.no_grad():
        peak = max(float(t.abs().max()) for c in checks for t in encoder(*c))
    atol = max(ATOL, STATS_REL_ATOL * peak)
    result = export_checked(
        encoder,
        example,
        path,
        ["image"],
        stats_names(encoder.levels),
        {"image": {0: dims["batch"], 2: dims["height"], 3: dims["width"]}},
        checks,
        atol=atol,
    )
    log(
        f"exported {path.name}: max |torch - ORT| {result.max_abs_diff:.3g} "
        f"(atol {atol:.3g}, peak |statistic| {peak:.3g})"
    )
    return result


def stylizer_names(stylizer: Cascade | StyleSwapCascade) -> list[str]:
    """The stylizer graph's input names, in its forward's order."""
    styles = stats_names(stylizer.levels)
    return ["content", "strength", *([STYLE] if isinstance(stylizer, StyleSwapCascade) else []), *styles]


def export_stylizer(
    encoder: StyleEncoder, cascade: Cascade | StyleSwapCascade, multiple: int, path: Path, log: Callable[[str], None]
) -> ExportResult:
    """``content``, ``strength`` (``style``), mean and cov per level -> ``image``; dynamic N, H, W."""
    dims = _dims(multiple)

    def fit(side: int) -> int:  # the next multiple, and at least as many as the service pads thin images to
        return max(MIN_FEATURE_SIDE, -(-side // multiple)) * multiple

    cell = cascade.cell if isinstance(cascade, StyleSwapCascade) else 0
    example = _stylizer_inputs(encoder, 2, fit(96), fit(160), seed=4, cell=cell)
    checks = [
        _stylizer_inputs(encoder, 1, fit(160), fit(56), seed=5, cell=cell),
        _stylizer_inputs(encoder, 3, fit(64), fit(192), seed=6, cell=cell),
    ]
    names = stylizer_names(cascade)
    shapes = {name: {0: dims["batch"]} for name in names}
    shapes["content"] = {0: dims["batch"], 2: dims["height"], 3: dims["width"]}
    if cell:
        style_dims = _dims(cell, "style_")
        shapes[STYLE] = {0: dims["batch"], 2: style_dims["height"], 3: style_dims["width"]}
    result = export_checked(cascade, example, path, names, ["image"], shapes, checks, atol=STYLIZER_ATOL)
    log(f"exported {path.name}: max |torch - ORT| {result.max_abs_diff:.3g} (atol {STYLIZER_ATOL:g})")
    return result


def stylizer_fp16(
    encoder: StyleEncoder,
    cascade: Cascade | StyleSwapCascade,
    multiple: int,
    source: Path,
    path: Path,
    log: Callable[[str], None],
    side: int = 256,
) -> Variant:
    """The stylizer's fp16 variant and its parity: PSNR against the fp32 PyTorch cascade on the
    held-out photos (long side ``side``) in two bundled styles, at full strength."""
    from training.style import data

    ops = fp16_variant(source, path)
    styles = list(data.bundled_style_images().values())[:2]
    photos = list(data.held_out_photos().values())
    cell = cascade.cell if isinstance(cascade, StyleSwapCascade) else 0

    def pairs(
        photos: list[np.ndarray], styles: list[np.ndarray], photo_side: int
    ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        reference, feeds = [], []
        with torch.no_grad():
            for photo in photos:
                x = data.resize_long_side(data.to_tensor(photo)[None], photo_side, multiple)
                for style in styles:
                    picture = data.to_tensor(np.array(style_picture(style, side, cell)))[None]
                    stats = encoder(picture)
                    inputs = (x, torch.ones(1), *((picture,) if cell else ()), *stats)
                    reference.append(cascade(*inputs).numpy())
                    feeds.append(dict(zip(stylizer_names(cascade), (t.numpy() for t in inputs))))
        return reference, feeds

    reference, feeds = pairs(photos, styles, side)
    # fp16 arithmetic on one pair at 128 px: the reference evaluator takes seconds a pair
    entry = fp16_parity(path, reference, feeds, "image", 1.0, ops, arithmetic=pairs(photos[:1], styles[:1], 128))
    log(
        f"{path.name}: PSNR vs PyTorch fp32 >= {entry.parity.min_psnr_db} dB on {len(feeds)} held-out pairs, "
        f"{fp16_verdict(entry.parity)}"
    )
    return entry


def check_transform(encoder: StyleEncoder, kind: str, log: Callable[[str], None]) -> float:
    """Max relative (Frobenius) error of the float32 Newton-Schulz transform matrix against a
    float64 eigendecomposition, at every level, on the statistics of two different images."""
    with torch.no_grad():
        content = encoder(_images(1, 96, 72, seed=7))
        style = encoder(_images(1, 80, 112, seed=8))
    worst = 0.0
    for i in range(len(encoder.levels)):
        fast = transform_matrix(content[2 * i + 1], style[2 * i + 1], kind).double()
        exact = transform_matrix_eigh(content[2 * i + 1], style[2 * i + 1], kind)
        worst = max(worst, float(torch.linalg.matrix_norm(fast - exact) / torch.linalg.matrix_norm(exact)))
    if not worst <= TRANSFORM_RTOL:
        raise ParityError(
            f"{kind} transform: Newton-Schulz vs float64 eigh relative error {worst:.3g} > {TRANSFORM_RTOL:g}"
        )
    log(f"{kind} transform: Newton-Schulz vs float64 eigh, max relative error {worst:.2g}")
    return worst


def _dims(multiple: int = 1, prefix: str = "") -> dict[str, Any]:
    from torch.export import Dim

    if multiple == 1:
        height, width = Dim(f"{prefix}height", min=8, max=8192), Dim(f"{prefix}width", min=8, max=8192)
    else:  # H and W are multiples of ``multiple`` by contract: say so, and the pools stay exact
        height = multiple * Dim(f"{prefix}h", min=2, max=8192 // multiple)
        width = multiple * Dim(f"{prefix}w", min=2, max=8192 // multiple)
    return {"batch": Dim("batch", min=1, max=1024), "height": height, "width": width}


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth random images (N, 3, H, W) in [0, 1]: low-frequency noise looks more like photos."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 8), max(2, w // 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _stylizer_inputs(
    encoder: StyleEncoder, n: int, h: int, w: int, seed: int, cell: int = 0
) -> tuple[torch.Tensor, ...]:
    """Images of one set, strengths in [0, 1], (with ``cell`` the style images,) the statistics of another set."""
    styles = _images(n, w, h, seed + 100)
    with torch.no_grad():
        stats = encoder(styles)
    strength = torch.linspace(1.0, 0.25, n) if n > 1 else torch.ones(1)
    return (_images(n, h, w, seed), strength, *((styles,) if cell else ()), *stats)
