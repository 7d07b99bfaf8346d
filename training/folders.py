"""The user's image folders, for every trainer: which files count as images, and what to do with
one that cannot be read (a download cut short, a file that only has an image's name)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# What Pillow raises for a file that is no readable image: UnidentifiedImageError and truncated data
# are OSErrors, a damaged PNG chunk a SyntaxError, some malformed headers a ValueError, an image
# past its pixel limit a DecompressionBombError.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def find_images(folder: Path) -> list[Path]:
    """Every jpg/jpeg/png/webp under ``folder`` (recursive, case-insensitive suffix), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_rgb(path: Path, at_least: int | None = None) -> np.ndarray:
    """A file's pixels as (H, W, 3) uint8, read as the service reads an upload: turned upright by its
    EXIF orientation, 16-bit and float grey scaled into 0..255 (not clipped white), transparency over
    white. ``at_least``: a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size (in the DCT, several
    times faster) while both sides stay at least this many pixels. The array may be read-only (Pillow's
    buffer). Raises one of ``UNREADABLE`` for a file Pillow cannot decode."""
    from service.images import to_rgb_array

    with Image.open(path) as img:
        if at_least:
            img.draft("RGB", (at_least, at_least))
        return to_rgb_array(ImageOps.exif_transpose(img), str(path))


def readable(path: Path) -> bool:
    """Whether Pillow decodes ``path`` to its last pixel (a file cut short has a good header)."""
    try:
        with Image.open(path) as img:
            img.load()
            return True
    except UNREADABLE:
        return False


def describe_unreadable(skipped: Sequence[tuple[Path, BaseException]], folder: Path, shown: int = 5) -> str:
    """One line naming the files skipped (the first ``shown`` of them, each with Pillow's reason)."""
    names = "; ".join(f"{p.relative_to(folder).as_posix()} ({type(e).__name__}: {e})" for p, e in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped {len(skipped)} unreadable image file(s) under {folder}: {names}{more}"


# The files this process found unreadable: each is said once on stderr and never decoded again
# (data-loading workers are processes of their own, and each says so once).
_unreadable: set[Path] = set()


def note_unreadable(path: Path, error: BaseException) -> None:
    if path not in _unreadable:
        _unreadable.add(path)
        print(f"skipping unreadable image {path} ({type(error).__name__}: {error})", file=sys.stderr, flush=True)


def known_unreadable(path: Path) -> bool:
    return path in _unreadable
