"""Universal style transfer on ONNX Runtime: ``style_encoder.onnx`` and ``stylizer.onnx``.

A style is described by its statistics: the mean and covariance of its VGG features at every
level of the cascade (docs/style-transfer.md). ``style_encoder.onnx`` computes them:
once at export for the presets (``style_presets.npz``), once per uploaded style (cached by the
upload's sha256). ``stylizer.onnx`` holds the whole cascade (encode, match the statistics,
decode; coarse to fine), so features never leave the device. Several styles are blended by
mixing their statistics: the mean and covariance of the weighted mixture of their feature
distributions.

When the export has patches on (the manifest's ``style.patches``), a style is also its picture:
the style image as the statistics saw it, its sides cropped to multiples of ``patches.cell``, an
input named ``style`` after ``strength``, from which the stylizer takes the style's own patches
(its shapes) and pixels. Several styles' pictures are blended as strips side by side, each as wide
as its weight's share (``style_canvas``).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.images import fit_long_side, resize_to
from service.manifest import Style

STYLE_CACHE_SIZE = 128
# Inputs up to ARENA_MAX_PIXELS (padded) run on the stylizer session with ONNX Runtime's memory
# arena (fast; its high-water mark is reached at warm-up). Up to SHRINK_MAX_PIXELS they run there
# too, and the CPU arena is shrunk after the run (memory given back). Larger ones run on the session
# without an arena (see service/runtime.open_session): at 2048 px the arena held far more memory
# than the call needed, and was slower.
ARENA_MAX_PIXELS = 512 * 512
SHRINK_MAX_PIXELS = 1024 * 1024
# The coarsest feature map must be at least this many pixels on each side (the decoders' reflection
# padding needs 2); smaller (thin) inputs are padded up to it and cropped back.
MIN_FEATURE_SIDE = 4
# Under CUDA, inputs are padded to multiples of this many pixels a side (shape buckets): cuDNN
# picks its algorithms once per input shape, so a bounded set of shapes, warmed at start-up,
# keeps that cost off requests. On the CPU a new shape costs no more than a known one (`make bench`'s
# new-shape rows), so there the padding stays minimal.
CUDA_SHAPE_BUCKET = 64

# mean_L (C,), cov_L (C, C) for each level L, in the manifest's order; then, with patches on, the
# style's picture (Hs, Ws, 3) uint8
Stats = list[np.ndarray]
STYLE = "style"  # the stylizer's input holding the style's picture, and its key in the presets
MIN_STRIP_CELLS = 4  # a blended style's strip of the picture is at least this many cells wide


def stats_names(levels: Sequence[str]) -> list[str]:
    """``mean_<level>``, ``cov_<level>`` for each level, in order: the style encoder's outputs."""
    return [f"{kind}_{level}" for level in levels for kind in ("mean", "cov")]


def style_inputs(levels: Sequence[str], patches: bool) -> list[str]:
    """The stylizer's style inputs in ``Stats`` order: ``stats_names``, then ``style`` with patches on."""
    return [*stats_names(levels), *([STYLE] if patches else [])]


def preset_keys(name: str, levels: Sequence[str], patches: bool = False) -> list[str]:
    """A preset's arrays in ``style_presets.npz``, in ``Stats`` order: ``<name>__<level>__<mean|cov>``,
    then ``<name>__style`` with patches on."""
    keys = [f"{name}__{level}__{kind}" for level in levels for kind in ("mean", "cov")]
    return [*keys, *([f"{name}__{STYLE}"] if patches else [])]


def style_picture(pixels: np.ndarray, side: int, cell: int = 0) -> np.ndarray:
    """A style image (H, W, 3) uint8 as the style encoder sees it: Lanczos to long side ``side``,
    then (``cell``) the middle of it whose sides are multiples of ``cell``."""
    resized = resize_long_side(pixels, side)
    if not cell:
        return resized
    h, w = resized.shape[:2]
    top, left = (h % cell) // 2, (w % cell) // 2
    return np.ascontiguousarray(resized[top : top + h - h % cell, left : left + w - w % cell])


def encode_style(
    encoder: ort.InferenceSession, pixels: np.ndarray, side: int, levels: Sequence[str], cell: int = 0
) -> Stats:
    """The statistics of a style image (H, W, 3) uint8 through ``style_encoder.onnx``, taken from its
    ``style_picture``, and with patches on (``cell``) that picture: the one definition shared by the
    presets (at export) and uploads."""
    picture = style_picture(pixels, side, cell)
    stats = [t[0] for t in encoder.run(stats_names(levels), {"image": _to_input(picture)})]
    return [*stats, picture] if cell else stats


class StyleTransfer:
    def __init__(
        self,
        exports: Path,
        style: Style,
        encoder: ort.InferenceSession,
        stylizer: ort.InferenceSession,
        large_stylizer: ort.InferenceSession | None = None,
        bucket: int | None = None,
    ):
        self.encoder, self.stylizer = encoder, stylizer
        self.large_stylizer = large_stylizer or stylizer
        self.levels = style.levels
        self.multiple = style.size_multiple
        # Where the stylizer's tensors live: inputs are bound there, preset statistics kept there.
        self.device = "cuda" if stylizer.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        if bucket is None:
            bucket = CUDA_SHAPE_BUCKET if self.device == "cuda" else 0
        self.step = math.lcm(self.multiple, bucket) if bucket else self.multiple  # padded sides are multiples
        self.style_side = style.style_image_side
        self.default_strength = style.default_strength  # for requests that give none
        self.cell = style.cell  # with patches on, the side of a style picture's cells, else 0
        self.stats_names = style_inputs(self.levels, bool(self.cell))
        with np.load(exports / style.presets_file) as npz:
            self.presets: dict[str, Stats] = {
                p.name: [npz[key] for key in preset_keys(p.name, self.levels, bool(self.cell))] for p in style.presets
            }
        # Each preset's statistics (and picture) as tensors on the stylizer's device, uploaded once.
        self.resident: dict[str, list[ort.OrtValue]] = {
            name: [
                ort.OrtValue.ortvalue_from_numpy(style_input(key, value), self.device, 0)
                for key, value in zip(self.stats_names, stats)
            ]
            for name, stats in self.presets.items()
        }
        self.thumbnails = {p.name: (exports / p.thumbnail).read_bytes() for p in style.presets}
        self.preset_sources = {p.name: p.source for p in style.presets}
        self.preset_credits = {p.name: p.credit for p in style.presets}
        self._cache: OrderedDict[str, Stats] = OrderedDict()
        self._lock = threading.Lock()

    def preset_style(self, name: str) -> Stats:
        """A preset's style as ``stylize`` takes an uploaded one."""
        return self.presets[name]

    def style_stats(self, pixels: np.ndarray) -> Stats:
        """The statistics of a style image (H, W, 3) uint8 (and its picture), at long side ``style_side``."""
        return encode_style(self.encoder, pixels, self.style_side, self.levels, self.cell)

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

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        return padded_size(h, w, self.multiple, self.step)

    def bucket_shapes(self, long_side: int) -> list[tuple[int, int]]:
        """Every shape an input of long side ``long_side`` runs at, whatever its aspect ratio (squarest first)."""
        shapes = {
            self.padded_size(a, b)
            for short in range(1, long_side + 1)
            for a, b in ((long_side, short), (short, long_side))
        }
        return sorted(shapes, key=lambda hw: (-min(hw), hw))

    def stylize(
        self, content: np.ndarray, stats: Stats | str, strength: float | None, preserve_color: bool, max_side: int
    ) -> np.ndarray:
        """Content (H, W, 3) uint8 -> stylised (h, w, 3) uint8 with the content's aspect ratio, long side <= max_side.

        ``stats`` is a style's statistics, or a preset's name (its statistics are already on the
        device); ``strength`` None: the export's ``default_strength``. The input is padded
        (mirrored) to the session's shape step (the coarsest level's stride, or the shape bucket
        under CUDA), and to at least ``MIN_FEATURE_SIDE`` features a side, and cropped back.
        """
        if max(content.shape[:2]) > max_side:
            content = resize_long_side(content, max_side)
        h, w = content.shape[:2]
        image = self.stylize_padded(content, stats, self.default_strength if strength is None else strength)
        out = np.rint(image[0, :, :h, :w].transpose(1, 2, 0) * 255.0).clip(0, 255).astype(np.uint8)
        return keep_colors(content, out) if preserve_color else out

    def stylize_padded(self, content: np.ndarray, stats: Stats | str, strength: float) -> np.ndarray:
        """Content (H, W, 3) uint8 -> the cascade's output as it is: float (1, 3, H', W') in [0, 1]
        over the content padded for the session, on the session its size calls for."""
        padded = pad_for_cascade(content, self.multiple, self.step)
        area = padded.shape[0] * padded.shape[1]
        session = self.large_stylizer if area > SHRINK_MAX_PIXELS else self.stylizer
        shrink = self.device == "cpu" and ARENA_MAX_PIXELS < area <= SHRINK_MAX_PIXELS
        return self.run_stylizer(
            session,
            _to_input(padded),
            self.resident[stats] if isinstance(stats, str) else stats,
            strength,
            shrink_arena=shrink,
        )

    def run_stylizer(
        self,
        session: ort.InferenceSession,
        x: np.ndarray,
        stats: Stats | list[ort.OrtValue],
        strength: float,
        shrink_arena: bool = False,
    ) -> np.ndarray:
        """One run of the cascade with I/O binding: the image is copied to the device once and the
        result back once; resident statistics (``OrtValue``) are bound where they are.
        ``shrink_arena``: give the CPU arena's unused memory back after the run."""
        binding = session.io_binding()
        binding.bind_cpu_input("content", x)
        binding.bind_cpu_input("strength", np.array([strength], dtype=np.float32))
        for name, value in zip(self.stats_names, stats):
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, style_input(name, value))
        binding.bind_output("image", self.device)
        options = ort.RunOptions()
        if shrink_arena:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        session.run_with_iobinding(binding, options)
        return binding.get_outputs()[0].numpy()


def style_input(name: str, value: np.ndarray) -> np.ndarray:
    """One style input as the stylizer takes it: a statistic with a batch axis, float32; the picture
    (``style``) as (1, 3, Hs, Ws) float32 in [0, 1]."""
    if name == STYLE:
        return _to_input(value)
    return np.ascontiguousarray(value[None], dtype=np.float32)


def style_canvas(pictures: Sequence[np.ndarray], weights: np.ndarray, cell: int) -> np.ndarray:
    """Several styles' pictures (H_i, W_i, 3) uint8 as one: the first one's height, each picture scaled
    to it and cut to a strip from its middle as wide as its weight's share (weights sum to 1) of the
    first one's width (at least ``MIN_STRIP_CELLS`` cells, none for a weight of 0; mirrored where a
    picture is narrower), side by side, the width a multiple of ``cell``. The patches then come from each style in
    proportion to its weight, at the scale each had alone."""
    height, width = pictures[0].shape[:2]
    strips = []
    for picture, weight in zip(pictures, weights):
        if weight <= 0:
            continue
        h, w = picture.shape[:2]
        scaled = resize_to(picture, (max(1, round(w * height / h)), height))
        strip = max(MIN_STRIP_CELLS * cell, round(width * weight / cell) * cell)
        if scaled.shape[1] < strip:
            scaled = np.pad(scaled, ((0, 0), (0, strip - scaled.shape[1]), (0, 0)), mode="symmetric")
        left = (scaled.shape[1] - strip) // 2
        strips.append(scaled[:, left : left + strip])
    return np.ascontiguousarray(np.concatenate(strips, axis=1))


def mix_stats(styles: Sequence[Stats], weights: Sequence[float], cell: int = 0) -> Stats:
    """The statistics of the weighted mixture of several styles' feature distributions:
    mean = sum w_i mean_i, cov = sum w_i (cov_i + mean_i mean_i^T) - mean mean^T (weights sum to 1);
    with patches on (``cell``), the pictures after the levels' pairs make one ``style_canvas``."""
    if len(styles) == 1:
        return styles[0]
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    out: Stats = []
    pairs = len(styles[0]) // 2 * 2
    for i in range(0, pairs, 2):
        means = np.stack([s[i].astype(np.float64) for s in styles])  # (K, C)
        covs = np.stack([s[i + 1].astype(np.float64) for s in styles])  # (K, C, C)
        mean = np.einsum("k,kc->c", w, means)
        second = np.einsum("k,kcd->cd", w, covs + means[:, :, None] * means[:, None, :])
        out += [mean.astype(np.float32), (second - np.outer(mean, mean)).astype(np.float32)]
    if cell:
        out.append(style_canvas([s[pairs] for s in styles], w, cell))
    return out


def padded_size(h: int, w: int, multiple: int, step: int | None = None) -> tuple[int, int]:
    """The (H, W) an (h, w) input runs at: up to multiples of ``step`` (a multiple of ``multiple``,
    the coarsest level's stride; by default that stride) and at least ``MIN_FEATURE_SIDE * multiple``
    a side."""
    step = step or multiple
    low = -(-MIN_FEATURE_SIDE * multiple // step) * step
    return max(-(-h // step) * step, low), max(-(-w // step) * step, low)


def pad_for_cascade(pixels: np.ndarray, multiple: int, step: int | None = None) -> np.ndarray:
    """(h, w, C) -> mirrored at the bottom and right up to ``padded_size``; the top-left (h, w) is the
    input, unchanged."""
    h, w = pixels.shape[:2]
    ph, pw = padded_size(h, w, multiple, step)
    if (ph, pw) == (h, w):
        return pixels
    return np.pad(pixels, ((0, ph - h), (0, pw - w), (0, 0)), mode="symmetric")


def _to_input(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def resize_long_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """Pillow LANCZOS to long side ``side`` (up or down), aspect kept — as the export does for presets."""
    return resize_to(pixels, fit_long_side(pixels.shape[1], pixels.shape[0], side))


def keep_colors(content: np.ndarray, stylised: np.ndarray) -> np.ndarray:
    """Luminance from the stylised image, chroma (Cb, Cr) from the content (ITU-R BT.601, as in JPEG)."""
    y = Image.fromarray(stylised).convert("YCbCr").getchannel("Y")
    _, cb, cr = Image.fromarray(content).convert("YCbCr").split()
    return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))
