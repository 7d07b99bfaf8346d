"""Fast arbitrary style transfer on ONNX Runtime: VGG encoder -> (AdaIN + strength + decoder).

AdaIN and the strength blend live inside ``decoder.onnx``, so the service only supplies a style's
per-channel statistics: precomputed for presets (``style_presets.npz``), computed once per
uploaded style and cached by the upload's sha256. The statistics follow the manifest's
``style.style_stats`` definition, which training's export uses for the presets.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

STYLE_CACHE_SIZE = 128


class StyleTransfer:
    def __init__(self, exports: Path, manifest: dict[str, Any], encoder: ort.InferenceSession,
                 decoder: ort.InferenceSession):
        style = manifest["style"]
        self.encoder, self.decoder = encoder, decoder
        self.multiple: int = style["size_multiple"]
        self.style_side: int = style["style_image_side"]
        self.eps: float = manifest["models"]["decoder"]["adain_eps"]
        stats = np.load(exports / style["presets_file"])
        self.presets: dict[str, tuple[np.ndarray, np.ndarray]] = {
            p["name"]: (stats[f"{p['name']}__mean"], stats[f"{p['name']}__std"]) for p in style["presets"]
        }
        self.thumbnails: dict[str, bytes] = {p["name"]: (exports / p["thumbnail"]).read_bytes() for p in style["presets"]}
        self.preset_sources = {p["name"]: p["source"] for p in style["presets"]}
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def style_stats(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std (C,) of the encoder features of a style image (long side ``style_side``)."""
        x = _to_input(resize_long_side(pixels, self.style_side))
        (features,) = self.encoder.run(["features"], {"image": x})
        f = features[0].astype(np.float64)  # (C, h, w)
        mean = f.mean(axis=(1, 2))
        std = np.sqrt(((f - mean[:, None, None]) ** 2).mean(axis=(1, 2)) + self.eps)
        return mean.astype(np.float32), std.astype(np.float32)

    def uploaded_style_stats(self, data: bytes, decode: Callable[[], np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
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

    def stylize(self, content: np.ndarray, stats: tuple[np.ndarray, np.ndarray], strength: float,
                preserve_color: bool, max_side: int) -> np.ndarray:
        """Content (H, W, 3) uint8 -> stylised (h, w, 3) uint8 with the content's aspect ratio, long side <= max_side.

        The input is padded (reflection) to a multiple of the encoder's stride and cropped back.
        """
        if max(content.shape[:2]) > max_side:
            content = resize_long_side(content, max_side)
        h, w = content.shape[:2]
        ph, pw = -h % self.multiple, -w % self.multiple
        padded = np.pad(content, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else content
        (features,) = self.encoder.run(["features"], {"image": _to_input(padded)})
        mean, std = stats
        (image,) = self.decoder.run(["image"], {
            "features": features, "style_mean": mean[None], "style_std": std[None],
            "strength": np.array([strength], dtype=np.float32),
        })
        out = np.rint(image[0, :, :h, :w].transpose(1, 2, 0) * 255.0).clip(0, 255).astype(np.uint8)
        return keep_colors(content, out) if preserve_color else out


def _to_input(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def resize_long_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """Pillow LANCZOS to long side ``side`` (up or down), aspect kept — as the export does for presets."""
    h, w = pixels.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def keep_colors(content: np.ndarray, stylised: np.ndarray) -> np.ndarray:
    """Luminance from the stylised image, chroma (Cb, Cr) from the content (ITU-R BT.601, as in JPEG)."""
    y = Image.fromarray(stylised).convert("YCbCr").getchannel("Y")
    _, cb, cr = Image.fromarray(content).convert("YCbCr").split()
    return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))
