"""The user's image folders, for every trainer: which files count as images."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def find_images(folder: Path) -> list[Path]:
    """Every jpg/jpeg/png/webp under ``folder`` (recursive, case-insensitive suffix), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
