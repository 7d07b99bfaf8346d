"""Images for decoder training, the bundled style presets, and the held-out evaluation pictures.

Training sources: photos and textures bundled in scikit-image (offline; only files shipped inside
the wheel, never its pooch downloads), or a folder of the user's images (recursive jpg/png/webp).
``TrainingImages[step]`` returns one batch computed from ``(seed, step)`` alone, so a resumed run
sees exactly the data stream of an uninterrupted one and workers need no shared state.

The decoders only learn to invert VGG features, so what matters is that the training crops cover
the colours and textures of any photo: 12 pictures, 7 of them grey, cannot, so every crop is
recoloured (hue over the full circle, saturation, channel order, duotone tints of grey images,
brightness, contrast, gamma) and rescaled (0.5x to 4x).

Never trained on: the evaluation set of the quality report (``pictures/eval``: everyday colour
photos, and paintings, prints, drawings and patterns as styles, from PyPI and npm packages, plus
two drawn patterns), the style presets (``pictures/presets`` plus four drawn patterns; each file's
package, version and licence in ``pictures/sources.json``), and the export's held-out photos
(scikit-learn's two sample photos and matplotlib's, for its reconstruction and parity checks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from training.folders import UNREADABLE, find_images, known_unreadable, note_unreadable, open_rgb
from training.style.patterns import PATTERNS

# skimage.data loaders that read files shipped inside the scikit-image 0.26 wheel.
CONTENT_LOADERS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "camera",
    "coins",
    "moon",
    "clock",
    "brick",
    "grass",
    "gravel",
)
PICTURES = Path(__file__).resolve().parent / "pictures"
# Drawn patterns (``patterns.py``) beside the files: two in the evaluation set, four others as presets.
EVAL_PATTERNS = ("stripes", "dots")
PRESET_PATTERNS = ("chevrons", "truchet", "checks", "rings")
# Colour photos shipped by other PyPI packages, never used in training, for the export's own
# reconstruction and fp16 checks: (package, file in it).
HELD_OUT_PHOTOS = {
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


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


def held_out_photos() -> dict[str, np.ndarray]:
    """The held-out colour photos (``HELD_OUT_PHOTOS``) as (H, W, 3) uint8."""
    import importlib.util

    out = {}
    for name, (package, rel) in HELD_OUT_PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"held-out photo {name!r} needs the {package} package")
        out[name] = load_image(Path(spec.origin).parent / rel)
    return out


def pictures(folder: str, patterns: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every image of ``pictures/<folder>`` (file stem -> HxWx3 uint8, sorted), then the named
    drawn patterns at 512 x 512."""
    out = {path.stem: load_image(path) for path in find_images(PICTURES / folder)}
    return {**out, **{name: PATTERNS[name]() for name in patterns}}


def picture_credits() -> dict[str, str]:
    """File stem -> what it depicts, where it comes from and its licence (``pictures/sources.json``);
    a drawn pattern -> the function that draws it."""
    credits = {
        Path(r["file"]).stem: f"{r['depicts']}; {r['rights']}; from {r['package']} {r['version']} "
        f"({r['registry']}, {r['licence']})"
        for r in json.loads((PICTURES / "sources.json").read_text())
    }
    return {**credits, **{name: f"drawn by training/style/patterns.py: {name}()" for name in PATTERNS}}


def bundled_style_images() -> dict[str, np.ndarray]:
    """The built-in style presets: ``pictures/presets`` and ``PRESET_PATTERNS``; name -> HxWx3 uint8."""
    return pictures("presets", PRESET_PATTERNS)


def evaluation_pictures() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(photos, styles) of the quality report's evaluation set: ``pictures/eval`` and ``EVAL_PATTERNS``."""
    return pictures("eval/photos"), pictures("eval/styles", EVAL_PATTERNS)


def load_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 (``open_rgb``), shrunk (aspect kept) so its long side <= ``max_side``."""
    from PIL import Image

    pixels = open_rgb(path, at_least=max_side)  # a 12-MP JPEG at 1/2: 0.08 s instead of 0.33 s, 55 dB alike
    if max_side and max(pixels.shape[:2]) > max_side:
        im = Image.fromarray(pixels)
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        pixels = np.asarray(im, dtype=np.uint8)
    return pixels if pixels.flags.writeable else pixels.copy()  # torch.from_numpy wants a writable array


@dataclass(frozen=True)
class ImageSource:
    """A named list of images: held in memory (bundled) or read from files on demand (folders)."""

    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...] | None = None
    paths: tuple[Path, ...] | None = None
    max_side: int = 1024

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> np.ndarray | None:
        """Image ``i`` as (H, W, 3) uint8, or None when its file cannot be read (said once on stderr,
        and not read again in this process), so a damaged file in a large folder costs no run."""
        if self.arrays is not None:
            return self.arrays[i]
        path = self.paths[i]
        if known_unreadable(path):
            return None
        try:
            return load_image(path, self.max_side)
        except UNREADABLE as e:
            note_unreadable(path, e)
            return None

    def get(self, i: int) -> np.ndarray:
        """Image ``i``; in place of a file that cannot be read, the next one that can."""
        for j in range(len(self)):
            img = self.read((i + j) % len(self))
            if img is not None:
                return img
        raise ValueError(f"none of the {len(self)} image files can be read")

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


def random_crop(img: np.ndarray, crop: int, zoom: tuple[float, float], rng: np.random.Generator) -> Tensor:
    """A random square of (H, W, 3) uint8 -> (3, crop, crop) float in [0, 1]: its side is ``crop``
    times a log-uniform factor in ``zoom`` (capped by the short side), resized to ``crop``."""
    h, w = img.shape[:2]
    factor = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]))))
    side = int(min(min(h, w), max(1, round(crop * factor))))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    patch = to_tensor(img[top : top + side, left : left + side])[None]  # (1, 3, side, side)
    return F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False, antialias=side > crop)[0]


_LUMA = torch.tensor([0.299, 0.587, 0.114])
# RGB <-> YIQ (NTSC): a rotation in the I-Q plane turns the hue, Y (luma) stays.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(img: Tensor, angle: float) -> Tensor:
    """(3, H, W) RGB, hue turned by ``angle`` radians (luma kept; the result may leave [0, 1])."""
    c, s = np.cos(angle), np.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float32)
    m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
    return torch.einsum("ij,jhw->ihw", m, img)


def is_grey(img: Tensor, tol: float = 2.0 / 255) -> bool:
    return bool((img - img.mean(0, keepdim=True)).abs().max() <= tol)


def recolour(img: Tensor, rng: np.random.Generator) -> Tensor:
    """Colour augmentation of (3, H, W) in [0, 1] that reaches every hue and saturation.

    A grey crop becomes a duotone (its luma mapped between two random colours) most of the time;
    then channels are permuted, the hue turned by a uniform angle, saturation scaled
    (0.25x to 2x, log-uniform), and brightness, contrast and gamma jittered.
    """
    luma = torch.einsum("c,chw->hw", _LUMA, img)[None]  # (1, H, W)
    if is_grey(img) and rng.random() < 0.8:
        dark, light = torch.from_numpy(rng.uniform(0, 1, size=(2, 3, 1, 1))).float()
        img = dark + (light - dark) * luma
    img = img[torch.from_numpy(rng.permutation(3))]
    img = rotate_hue(img, float(rng.uniform(0, 2 * np.pi)))
    luma = torch.einsum("c,chw->hw", _LUMA, img)[None]
    img = luma + (img - luma) * float(np.exp(rng.uniform(np.log(0.25), np.log(2.0))))
    img = (img - 0.5) * float(rng.uniform(0.7, 1.3)) + 0.5 + float(rng.uniform(-0.15, 0.15))
    return img.clamp(0.0, 1.0) ** float(np.exp(rng.uniform(-0.4, 0.4)))


def augment(
    img: np.ndarray, crop: int, zoom: tuple[float, float], rng: np.random.Generator, colour: bool = True
) -> Tensor:
    """Random rescaled crop, flips and (``colour``) recolouring: (H, W, 3) uint8 -> (3, crop, crop)."""
    x = random_crop(img, crop, zoom, rng)
    if rng.random() < 0.5:
        x = x.flip(-1)
    if rng.random() < 0.2:
        x = x.flip(-2)
    return recolour(x, rng) if colour else x


class TrainingImages(Dataset):
    """Item ``step`` = a batch (B, 3, crop, crop) in [0, 1] of augmented crops of ``source``.

    Every random choice comes from ``np.random.default_rng([seed, step])``: the batch of a step is
    a pure function of (seed, step). Use with ``DataLoader(batch_size=None, sampler=range(a, b))``.
    ``shard`` (a distributed run's rank) draws a stream of its own; shard 0 is the one-process stream.
    """

    def __init__(
        self,
        source: ImageSource,
        crop: int,
        batch_size: int,
        seed: int,
        zoom: tuple[float, float] = (0.5, 4.0),
        colour: bool = True,
        shard: int = 0,
    ):
        self.source, self.crop, self.batch_size, self.seed = source, crop, batch_size, seed
        self.zoom, self.colour, self.shard = zoom, colour, shard

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler decides which steps are drawn

    def __getitem__(self, step: int) -> Tensor:
        rng = np.random.default_rng([self.seed, step] if self.shard == 0 else [self.seed, step, self.shard])
        picks = rng.integers(0, len(self.source), size=self.batch_size)
        return torch.stack([augment(self._pick(int(i), rng), self.crop, self.zoom, rng, self.colour) for i in picks])

    def _pick(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Image ``i``, or in place of an unreadable file one drawn at random (not its neighbour, which
        would be drawn twice as often); the draws are the same as ever for a folder that reads."""
        img = self.source.read(i)
        for _ in range(len(self.source)):
            if img is not None:
                return img
            img = self.source.read(int(rng.integers(0, len(self.source))))
        return img if img is not None else self.source.get(i)


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
