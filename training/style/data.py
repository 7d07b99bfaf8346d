"""Content and style images for decoder training, and the bundled style presets.

Sources: photos and textures bundled in scikit-image (offline; only files shipped inside the
wheel, never its pooch downloads), or a folder of the user's images (recursive jpg/png/webp).
``StylePairs[step]`` returns one (content, style) batch computed from ``(seed, step)`` alone, so a
resumed run sees exactly the data stream of an uninterrupted one and workers need no shared state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# skimage.data loaders that read files shipped inside the scikit-image 0.26 wheel.
CONTENT_LOADERS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera",
                   "coins", "moon", "clock")
STYLE_LOADERS = ("immunohistochemistry", "hubble_deep_field", "retina", "colorwheel",
                 "brick", "grass", "gravel")


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Grey (H, W), grey+alpha, RGB or RGBA, bool or uint8 -> (H, W, 3) uint8."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] in (2, 4):
        img = img[..., :-1]  # drop alpha
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def bundled_images(names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named ``skimage.data`` images as (H, W, 3) uint8 (grey images repeated to RGB)."""
    return {name: to_rgb_uint8(_skimage(name)) for name in names}


def bundled_content_images() -> dict[str, np.ndarray]:
    return bundled_images(CONTENT_LOADERS)


def bundled_style_images() -> dict[str, np.ndarray]:
    """Style textures bundled in scikit-image (also the built-in style presets): name -> HxWx3 uint8."""
    return bundled_images(STYLE_LOADERS)


def find_images(folder: Path) -> list[Path]:
    """Every jpg/jpeg/png/webp under ``folder`` (recursive, case-insensitive), sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8, shrunk (aspect kept) so its long side <= ``max_side``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8).copy()


@dataclass(frozen=True)
class ImageSource:
    """A named list of images: held in memory (bundled) or read from files on demand (folders)."""

    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...] | None = None
    paths: tuple[Path, ...] | None = None
    max_side: int = 1024

    def __len__(self) -> int:
        return len(self.names)

    def get(self, i: int) -> np.ndarray:
        """Image ``i`` as (H, W, 3) uint8."""
        if self.arrays is not None:
            return self.arrays[i]
        return load_image(self.paths[i], self.max_side)

    @classmethod
    def from_arrays(cls, images: dict[str, np.ndarray]) -> ImageSource:
        return cls(names=tuple(images), arrays=tuple(images.values()))

    @classmethod
    def from_folder(cls, folder: Path, max_side: int = 1024) -> ImageSource:
        paths = find_images(folder)
        if not paths:
            raise ValueError(f"no jpg/png/webp images under {folder}")
        names = tuple(str(p.relative_to(folder)) for p in paths)
        return cls(names=names, paths=tuple(paths), max_side=max_side)


def content_source(folder: Path | None) -> ImageSource:
    return ImageSource.from_folder(folder) if folder else ImageSource.from_arrays(bundled_content_images())


def style_source(folder: Path | None) -> ImageSource:
    return ImageSource.from_folder(folder) if folder else ImageSource.from_arrays(bundled_style_images())


def to_tensor(img: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


def resize_long_side(img: Tensor, side: int, multiple: int = 1) -> Tensor:
    """(N, 3, H, W) -> long side ``side``, aspect kept, H and W rounded to multiples of ``multiple``."""
    h, w = img.shape[-2:]
    scale = side / max(h, w)
    nh = max(multiple, round(h * scale / multiple) * multiple)
    nw = max(multiple, round(w * scale / multiple) * multiple)
    return F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)


def random_resized_crop(img: np.ndarray, crop: int, min_scale: float,
                        rng: np.random.Generator) -> Tensor:
    """A random square of (H, W, 3) uint8 -> (3, crop, crop) float: side in [min_scale, 1] x short side."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * rng.uniform(min_scale, 1.0))))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    patch = to_tensor(img[top:top + side, left:left + side])[None]  # (1, 3, side, side)
    return F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False,
                         antialias=side > crop)[0]


def color_jitter(img: Tensor, amount: float, rng: np.random.Generator) -> Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - amount, 1 + amount]."""
    if amount <= 0:
        return img
    b, c, s = rng.uniform(1 - amount, 1 + amount, size=3)
    img = img * b
    grey = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]  # (1, H, W)
    img = (img - grey.mean()) * c + grey.mean()
    grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    img = (img - grey) * s + grey
    return img.clamp(0.0, 1.0)


def augment(img: np.ndarray, crop: int, min_scale: float, jitter: float,
            rng: np.random.Generator) -> Tensor:
    """Random resized crop, horizontal flip and colour jitter: (H, W, 3) uint8 -> (3, crop, crop)."""
    x = random_resized_crop(img, crop, min_scale, rng)
    if rng.random() < 0.5:
        x = x.flip(-1)
    return color_jitter(x, jitter, rng)


class StylePairs(Dataset):
    """Item ``step`` = (content (B, 3, crop, crop), style (B, 3, crop, crop)) in [0, 1].

    Every random choice comes from ``np.random.default_rng([seed, step])``: the batch of a step is
    a pure function of (seed, step). Use with ``DataLoader(batch_size=None, sampler=range(a, b))``.
    """

    def __init__(self, content: ImageSource, style: ImageSource, crop: int, batch_size: int,
                 seed: int, jitter: float = 0.1, content_min_scale: float = 0.25,
                 style_min_scale: float = 0.1):
        self.content, self.style = content, style
        self.crop, self.batch_size, self.seed = crop, batch_size, seed
        self.jitter = jitter
        self.content_min_scale, self.style_min_scale = content_min_scale, style_min_scale

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler decides which steps are drawn

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, step])
        return (self._batch(self.content, self.content_min_scale, rng),
                self._batch(self.style, self.style_min_scale, rng))

    def _batch(self, source: ImageSource, min_scale: float, rng: np.random.Generator) -> Tensor:
        picks = rng.integers(0, len(source), size=self.batch_size)
        crops = [augment(source.get(int(i)), self.crop, min_scale, self.jitter, rng) for i in picks]
        return torch.stack(crops)


def pick_evenly(source: ImageSource, k: int, prefer: Sequence[str] = ()) -> list[int]:
    """Indices of up to ``k`` fixed images: the preferred names that exist, then evenly spaced others."""
    chosen = [source.names.index(n) for n in prefer if n in source.names][:k]
    rest = [i for i in range(len(source)) if i not in chosen]
    need = min(k - len(chosen), len(rest))
    if need > 0:
        chosen += [rest[j] for j in np.linspace(0, len(rest) - 1, num=need).round().astype(int)]
    return chosen


def load_fixed(source: ImageSource, indices: Sequence[int], side: int, multiple: int) -> list[Tensor]:
    """Each chosen image as (1, 3, h, w), long side ``side``, sides multiples of ``multiple``."""
    return [resize_long_side(to_tensor(source.get(i))[None], side, multiple) for i in indices]
