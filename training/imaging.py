"""Tensor-to-picture helpers shared by the trainers: grids and PNG files, and the style side's
conversions between pictures and RGB [0, 1] tensors (1, 3, H, W)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from training.runs import atomic_write_bytes

# what ``save_image`` writes, by file suffix
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


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


def load_image(path: Path, long_side: int) -> Tensor:
    """Read an image file as RGB (EXIF orientation applied), resized -> (1, 3, H, W) in [0, 1]."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
    return image_to_tensor(img, long_side)


def image_to_tensor(image: Image.Image | np.ndarray, long_side: int | None) -> Tensor:
    """A PIL image or uint8 array (H, W) / (H, W, 3) -> (1, 3, H', W') float in [0, 1].

    With ``long_side`` the longer side becomes ``long_side`` and the aspect ratio is kept.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if long_side is not None:
        w, h = image.size
        scale = long_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    arr = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(img: Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL RGB image."""
    arr = img[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def save_image(img: Tensor, path: Path) -> None:
    """Write ``img`` (1, 3, H, W) atomically; the format follows the suffix (png, jpg, webp)."""
    buf = io.BytesIO()
    tensor_to_image(img).save(buf, format=OUTPUT_FORMATS[Path(path).suffix.lower()])
    atomic_write_bytes(Path(path), buf.getvalue())
