"""Animated GIF and WebP: decoded to frames, stylised frame by frame, encoded back.

``decode_animation`` gives every frame as it is displayed (Pillow composites each frame over the
previous ones as the file's disposal rules say), transparency composited over white as for still
images, each frame resized to long side ``max_side`` at most; with each frame's duration and the
loop count. ``encode_animation`` writes them back as GIF or WebP with the same timing and loop.

GIF output uses one palette for the whole animation (chosen from all frames) rather than one per
frame: a palette that changes from frame to frame, and dithering patterns that follow it, make a
still scene shimmer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.images import ImageInputError, _load_pixels, _open_checked, fit_within, resize_to, to_rgb_array

DEFAULT_DURATION_MS = 100  # a frame without a duration (what browsers assume)
PALETTE_SAMPLE_PIXELS = 512 * 512  # pixels drawn from the frames to choose a GIF's shared palette


@dataclass
class Animation:
    frames: list[np.ndarray]  # (H, W, 3) uint8 each, all the same size
    durations: list[int]  # milliseconds, one per frame
    loop: int | None  # 0: forever; n: the file's loop count; None: no loop count (a GIF then plays once)
    format: str  # "gif" or "webp": what it came as


def decode_animation(
    data: bytes, field: str, *, max_pixels: int, min_side: int, max_frames: int, max_side: int | None = None
) -> Animation:
    """Every frame of an animated GIF or WebP (limits checked from the header first, as for stills)."""
    with _open_checked(data, field, max_pixels, min_side, max_frames) as opened:
        fmt = opened.format.lower()
        loop = opened.info.get("loop")
        target = fit_within(*opened.size, max_side) if max_side else opened.size
        frames, durations = [], []
        for index in range(getattr(opened, "n_frames", 1)):
            try:
                opened.seek(index)
            except EOFError:
                raise ImageInputError(field, f"truncated or corrupt animation (frame {index} is missing)") from None
            _load_pixels(opened, field)
            durations.append(int(opened.info.get("duration") or DEFAULT_DURATION_MS))
            frames.append(resize_to(to_rgb_array(opened, field), target))
    return Animation(frames, durations, loop, fmt)


def encode_animation(
    frames: list[np.ndarray], durations: list[int], loop: int | None, fmt: str, quality: int = 90
) -> bytes:
    """Frames (H, W, 3) uint8 -> an animated ``fmt`` ("gif" or "webp") file with these durations
    (ms) and loop count (None: a GIF without a loop count, a WebP played once)."""
    if fmt not in ("gif", "webp"):
        raise ValueError(f"animations are encoded as gif or webp, not {fmt!r}")
    buffer = io.BytesIO()
    if fmt == "gif":
        palette = shared_palette(frames)
        images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for f in frames]
        extra = {} if loop is None else {"loop": loop}
        images[0].save(
            buffer,
            "GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            disposal=1,
            optimize=False,
            **extra,
        )
    else:
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            buffer,
            "WEBP",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=1 if loop is None else loop,
            quality=quality,
            method=4,
        )
    return buffer.getvalue()


def shared_palette(frames: list[np.ndarray]) -> Image.Image:
    """One 256-colour palette for all ``frames`` (median cut over pixels drawn evenly from every frame)."""
    stacked = np.concatenate([f.reshape(-1, 3) for f in frames])
    step = max(1, len(stacked) // PALETTE_SAMPLE_PIXELS)
    sample = stacked[::step]
    side = int(np.ceil(np.sqrt(len(sample))))
    canvas = np.zeros((side * side, 3), np.uint8)
    canvas[: len(sample)] = sample
    canvas[len(sample) :] = sample[-1]
    return Image.fromarray(canvas.reshape(side, side, 3)).quantize(256, method=Image.Quantize.MEDIANCUT)
