"""Reading a request's fields and files, every limit checked before any pixel is decoded.

Each function raises ``ApiError`` (or its ``ImageInputError``) naming the field that was wrong.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from service.api import (
    ANIMATION_MAX_DECODE_MEGAPIXELS,
    ANIMATION_MAX_FRAMES,
    ANIMATION_MAX_MEGAPIXELS,
    IMAGE_LIMITS,
    MAX_STYLES,
    PRESET_NAME,
    UPLOAD_LIMIT,
    Weights,
)
from service.errors import ApiError
from service.images import check_header, decode_image, read_header

NO_STYLE = "give a style: style (an image file) and/or style_name (a preset)"


def preset_names(style_name: str | None, uploads: int, known: dict) -> list[str]:
    """The presets ``style_name`` names (``a,b``), each checked against ``known``, with the
    uploads' count within ``MAX_STYLES``."""
    names = [n.strip() for n in style_name.split(",")] if style_name is not None else []
    if not names and not uploads:
        raise ApiError("style", NO_STYLE)
    if len(names) + uploads > MAX_STYLES:
        raise ApiError("style", f"at most {MAX_STYLES} styles in one request, got {len(names) + uploads}")
    for name in names:
        if not _is_preset_name(name) or name not in known:
            raise ApiError("style_name", f"unknown preset {name!r}; available: {', '.join(sorted(known))}")
    return names


def _is_preset_name(name: str) -> bool:
    return re.fullmatch(PRESET_NAME, name) is not None


def blend_weights(weights: Weights, count: int) -> list[float]:
    """The blend weights of ``count`` styles, normalised to sum 1 (equal when none are given)."""
    if weights is None:
        return [1.0 / count] * count
    if isinstance(weights, str):
        try:
            values = [float(v) for v in weights.split(",")]
        except ValueError:
            raise ApiError("weights", f"comma-separated numbers expected, got {weights!r}") from None
    else:
        values = [float(v) for v in (weights if isinstance(weights, list) else [weights])]
    if len(values) != count:
        raise ApiError(
            "weights", f"{len(values)} weights for {count} style(s): one per style, presets first, then uploads"
        )
    if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise ApiError("weights", f"weights must be finite, >= 0 and not all 0, got {values}")
    total = sum(values)
    return [v / total for v in values]


def upload_bytes(path: Path, field: str) -> bytes:
    """An uploaded file's bytes, its size checked before reading."""
    size = path.stat().st_size
    if size > UPLOAD_LIMIT:
        raise ApiError(field, f"file is {size / 2**20:.1f} MB; the limit is {UPLOAD_LIMIT // 2**20} MB")
    return path.read_bytes()


def read_styles(styles: list[Path]) -> list[bytes]:
    """Uploaded styles' bytes, each header checked (a bad file is refused before it queues)."""
    style_data = [upload_bytes(path, "style") for path in styles]
    for upload in style_data:
        check_header(upload, "style", **IMAGE_LIMITS)
    return style_data


def read_content(content: Path) -> tuple[bytes, tuple[int, int, int]]:
    """The photo's bytes, its header checked, and its (width, height, frames)."""
    data = upload_bytes(content, "content")
    return data, read_header(data, "content", **IMAGE_LIMITS, max_frames=ANIMATION_MAX_FRAMES)


def check_animation(frames: int, size: tuple[int, int], out_size: tuple[int, int], format: str | None) -> None:
    """An animation's limits, from its header: 413 for more frames x pixels than one request takes."""
    if format in ("png", "jpeg"):
        raise ApiError(
            "format", f"an animation comes back as gif or webp, not {format} (leave format out for the kind it came as)"
        )
    work = frames * math.prod(out_size)
    if work > ANIMATION_MAX_MEGAPIXELS * 1_000_000:
        raise ApiError(
            "content",
            f"{frames} frames of {out_size[0]}x{out_size[1]} are {work / 1e6:.1f} "
            f"megapixels to repaint; the limit is {ANIMATION_MAX_MEGAPIXELS} "
            "(send fewer frames or a lower max_side)",
            status=413,
        )
    decoded = frames * math.prod(size)
    if decoded > ANIMATION_MAX_DECODE_MEGAPIXELS * 1_000_000:
        raise ApiError(
            "content",
            f"{frames} frames of {size[0]}x{size[1]} are {decoded / 1e6:.0f} megapixels "
            f"to decode; the limit is {ANIMATION_MAX_DECODE_MEGAPIXELS} "
            "(send fewer frames or smaller ones)",
            status=413,
        )


def decode(data: bytes, field: str, max_side: int | None = None) -> np.ndarray:
    """Every limit checked: dimensions from the header before any pixel is decoded; a large image
    is decoded straight to long side ``max_side``."""
    return decode_image(data, field, **IMAGE_LIMITS, max_side=max_side)
