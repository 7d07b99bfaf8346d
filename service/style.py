"""Universal style transfer on ONNX Runtime: ``style_encoder.onnx`` and ``stylizer.onnx``.

A style is described by its statistics: the mean and covariance of its VGG features at every
level of the cascade (the manifest's ``style.style_stats``). ``style_encoder.onnx`` computes them:
once at export for the presets (``style_presets.npz``), once per uploaded style (cached by the
upload's sha256). ``stylizer.onnx`` holds the whole cascade (encode, match the statistics,
decode; coarse to fine), so features never leave the device. Several styles are blended by
mixing their statistics: the mean and covariance of the weighted mixture of their feature
distributions.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.images import fit_long_side

STYLE_CACHE_SIZE = 128
# Inputs up to this many (padded) pixels run on the stylizer session with ONNX Runtime's memory
# arena (fast; its high-water mark is reached at warm-up); larger ones on the session without it,
# which gives the memory back after each call (see service/runtime.open_session).
ARENA_MAX_PIXELS = 512 * 512
# The coarsest feature map must be at least this many pixels on each side (the decoders' reflection
# padding needs 2); smaller (thin) inputs are padded up to it and cropped back.
MIN_FEATURE_SIDE = 4

Stats = list[np.ndarray]  # mean_L (C,), cov_L (C, C) for each level L, in the manifest's order


def stats_names(levels: Sequence[str]) -> list[str]:
    """``mean_<level>``, ``cov_<level>`` for each level, in order: the graphs' input/output names."""
    return [f"{kind}_{level}" for level in levels for kind in ("mean", "cov")]


def preset_keys(name: str, levels: Sequence[str]) -> list[str]:
    """A preset's arrays in ``style_presets.npz``, in ``stats_names`` order: ``<name>__<level>__<mean|cov>``."""
    return [f"{name}__{level}__{kind}" for level in levels for kind in ("mean", "cov")]


def encode_style(encoder: ort.InferenceSession, pixels: np.ndarray, side: int, levels: Sequence[str]) -> Stats:
    """The statistics of a style image (H, W, 3) uint8 through ``style_encoder.onnx``, resized to
    long side ``side`` first: the one definition shared by the presets (at export) and uploads."""
    x = _to_input(resize_long_side(pixels, side))
    return [t[0] for t in encoder.run(stats_names(levels), {"image": x})]


class StyleTransfer:
    def __init__(self, exports: Path, manifest: dict[str, Any], encoder: ort.InferenceSession,
                 stylizer: ort.InferenceSession, large_stylizer: ort.InferenceSession | None = None):
        style = manifest["style"]
        self.encoder, self.stylizer = encoder, stylizer
        self.large_stylizer = large_stylizer or stylizer
        self.levels: list[str] = style["levels"]
        self.multiple: int = style["size_multiple"]
        self.style_side: int = style["style_image_side"]
        self.stats_names = stats_names(self.levels)
        with np.load(exports / style["presets_file"]) as npz:
            self.presets: dict[str, Stats] = {
                p["name"]: [npz[key] for key in preset_keys(p["name"], self.levels)] for p in style["presets"]
            }
        self.thumbnails: dict[str, bytes] = {p["name"]: (exports / p["thumbnail"]).read_bytes() for p in style["presets"]}
        self.preset_sources = {p["name"]: p["source"] for p in style["presets"]}
        self._cache: OrderedDict[str, Stats] = OrderedDict()
        self._lock = threading.Lock()

    def style_stats(self, pixels: np.ndarray) -> Stats:
        """The statistics of a style image (H, W, 3) uint8, resized to long side ``style_side``."""
        return encode_style(self.encoder, pixels, self.style_side, self.levels)

    def uploaded_style_stats(self, data: bytes, decode: Callable[[], np.ndarray]) -> tuple[Stats, bool]:
        """Statistics of an uploaded style, cached by the sha256 of its bytes (a hit skips decoding);
        also says whether it was cached."""
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], True
        stats = self.style_stats(decode())
        with self._lock:
            self._cache[key] = stats
            while len(self._cache) > STYLE_CACHE_SIZE:
                self._cache.popitem(last=False)
        return stats, False

    def stylize(self, content: np.ndarray, stats: Stats, strength: float, preserve_color: bool,
                max_side: int) -> np.ndarray:
        """Content (H, W, 3) uint8 -> stylised (h, w, 3) uint8 with the content's aspect ratio, long side <= max_side.

        The input is padded (mirrored) to a multiple of the coarsest level's stride, and to at least
        ``MIN_FEATURE_SIDE`` features a side, and cropped back.
        """
        if max(content.shape[:2]) > max_side:
            content = resize_long_side(content, max_side)
        h, w = content.shape[:2]
        padded = pad_for_cascade(content, self.multiple)
        feed = {"content": _to_input(padded), "strength": np.array([strength], dtype=np.float32)}
        feed.update({name: s[None] for name, s in zip(self.stats_names, stats)})
        session = self.stylizer if padded.shape[0] * padded.shape[1] <= ARENA_MAX_PIXELS else self.large_stylizer
        (image,) = session.run(["image"], feed)
        out = np.rint(image[0, :, :h, :w].transpose(1, 2, 0) * 255.0).clip(0, 255).astype(np.uint8)
        return keep_colors(content, out) if preserve_color else out


def mix_stats(styles: Sequence[Stats], weights: Sequence[float]) -> Stats:
    """The statistics of the weighted mixture of several styles' feature distributions:
    mean = sum w_i mean_i, cov = sum w_i (cov_i + mean_i mean_i^T) - mean mean^T (weights sum to 1)."""
    if len(styles) == 1:
        return styles[0]
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    out: Stats = []
    for i in range(0, len(styles[0]), 2):
        means = np.stack([s[i].astype(np.float64) for s in styles])  # (K, C)
        covs = np.stack([s[i + 1].astype(np.float64) for s in styles])  # (K, C, C)
        mean = np.einsum("k,kc->c", w, means)
        second = np.einsum("k,kcd->cd", w, covs + means[:, :, None] * means[:, None, :])
        out += [mean.astype(np.float32), (second - np.outer(mean, mean)).astype(np.float32)]
    return out


def pad_for_cascade(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """(H, W, 3) -> mirrored at the bottom and right up to multiples of ``multiple`` and at least
    ``MIN_FEATURE_SIDE * multiple`` a side (the top-left (H, W) is the input, unchanged)."""
    h, w = pixels.shape[:2]
    low = MIN_FEATURE_SIDE * multiple
    ph = max(-h % multiple, low - h)
    pw = max(-w % multiple, low - w)
    if ph == 0 and pw == 0:
        return pixels
    return np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def _to_input(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def resize_long_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """Pillow LANCZOS to long side ``side`` (up or down), aspect kept — as the export does for presets."""
    size = fit_long_side(pixels.shape[1], pixels.shape[0], side)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def keep_colors(content: np.ndarray, stylised: np.ndarray) -> np.ndarray:
    """Luminance from the stylised image, chroma (Cb, Cr) from the content (ITU-R BT.601, as in JPEG)."""
    y = Image.fromarray(stylised).convert("YCbCr").getchannel("Y")
    _, cb, cr = Image.fromarray(content).convert("YCbCr").split()
    return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))
