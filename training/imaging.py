"""Tensor-to-picture helpers shared by the trainers: grids and PNG files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.runs import atomic_write_bytes


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(N, C, H, W) float in ``value_range`` -> (N, H, W, C) uint8, rounding to nearest (as the service does)."""
    lo, hi = value_range
    x = (images.detach().float().cpu() - lo) * (255.0 / (hi - lo))
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*H + gaps, ncols*W + gaps, C) image, row-major."""
    n, h, w, c = images.shape
    rows = -(-n // ncols)
    out = np.zeros((rows * h + (rows - 1) * pad, ncols * w + (ncols - 1) * pad, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = img
    return out


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write an (H, W, C) uint8 array as PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
