"""Builders for good and hostile image uploads, made in memory (no binary files in the repo).

Every function returns the bytes of one file. The pixel content is deterministic (gradients
and solid blocks) so tests can check decoded values. Used by ``tests/test_images.py``, by
HTTP tests against a running server, and by the soak's hostile requests (``bench/soak.py``).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION = 0x0112


def gradient(w: int, h: int) -> np.ndarray:
    """uint8 ``(h, w, 3)``: red rises left to right, green top to bottom, blue constant 128."""
    x = np.linspace(0, 255, w).round().astype(np.uint8)
    y = np.linspace(0, 255, h).round().astype(np.uint8)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:, :, 0] = x[None, :]
    rgb[:, :, 1] = y[:, None]
    rgb[:, :, 2] = 128
    return rgb


def save(image: Image.Image, fmt: str, **options) -> bytes:
    """Encode ``image`` with Pillow in format ``fmt`` (e.g. "TIFF" for exotic modes)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png(w: int = 64, h: int = 48) -> bytes:
    """An RGB PNG of ``gradient(w, h)``."""
    return save(Image.fromarray(gradient(w, h)), "PNG")


def jpeg(w: int = 64, h: int = 48, quality: int = 95) -> bytes:
    """An RGB JPEG of ``gradient(w, h)``."""
    return save(Image.fromarray(gradient(w, h)), "JPEG", quality=quality)


def webp(w: int = 64, h: int = 48) -> bytes:
    """A lossy WebP of ``gradient(w, h)``."""
    return save(Image.fromarray(gradient(w, h)), "WEBP", quality=95)


def bmp(w: int = 32, h: int = 24) -> bytes:
    """An RGB BMP of ``gradient(w, h)`` (lossless)."""
    return save(Image.fromarray(gradient(w, h)), "BMP")


def tiff(w: int = 32, h: int = 24) -> bytes:
    """An RGB TIFF of ``gradient(w, h)`` (lossless)."""
    return save(Image.fromarray(gradient(w, h)), "TIFF")


def gif(w: int = 32, h: int = 24) -> bytes:
    """A single-frame GIF: left half red, right half blue (exact in a palette)."""
    return save(Image.fromarray(_halves(w, h, RED, BLUE)), "GIF")


def empty() -> bytes:
    """Zero bytes."""
    return b""


def non_image_bytes() -> bytes:
    """Text that no image decoder identifies."""
    return b"this is not an image, it is a text file.\n" * 8


def unsupported_format() -> bytes:
    """A valid image in a format the service does not accept (Windows ICO)."""
    return save(Image.fromarray(gradient(32, 32)), "ICO")


def one_by_one_png() -> bytes:
    """A valid 1x1 PNG (too small to stylise)."""
    return save(Image.new("RGB", (1, 1), RED), "PNG")


def truncated_png() -> bytes:
    """A 64x64 PNG cut in half: the header is intact, the pixel data ends early."""
    data = save(Image.fromarray(gradient(64, 64)), "PNG", compress_level=0)
    return data[: len(data) // 2]


def huge_header_png(width: int = 50000, height: int = 50000) -> bytes:
    """A tiny real PNG whose IHDR claims ``width x height`` (CRC recomputed, so it is valid)."""
    data = bytearray(save(Image.new("L", (16, 16), 128), "PNG"))
    # Signature (8) | length (4) | b"IHDR" (4) | width, height, ... (13) | CRC (4)
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def animated_gif(frames: int = 3) -> bytes:
    """A GIF with ``frames`` distinct solid-colour frames."""
    images = [Image.new("RGB", (32, 32), (i * 255 // frames, 40, 200)) for i in range(frames)]
    return save(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def panning_gif(w: int, h: int, durations: list[int], step: int = 4) -> bytes:
    """An animated GIF, one frame per duration (ms): a window of ``w x h`` moving ``step`` px a frame
    across a gradient (every frame different), looping forever."""
    images = [
        Image.fromarray(gradient(w + step * i, h)).crop((step * i, 0, step * i + w, h)) for i in range(len(durations))
    ]
    return save(images[0], "GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)


def long_gif(frames: int = 301) -> bytes:
    """A 32x32 GIF of ``frames`` frames, each different (a dot walking across a grey field: GIF
    writers merge identical neighbours, so solid colours would not keep their count)."""
    images = []
    for i in range(frames):
        pixels = np.full((32, 32, 3), 128, np.uint8)
        pixels[i // 32 % 32, i % 32] = (255, 0, 0)
        images.append(Image.fromarray(pixels))
    return save(images[0], "GIF", save_all=True, append_images=images[1:], duration=40, loop=0)


def animated_png(frames: int = 2) -> bytes:
    """An APNG with ``frames`` distinct solid-colour frames."""
    images = [Image.new("RGB", (32, 32), (60 * i, 0, 255 - 60 * i)) for i in range(frames)]
    return save(images[0], "PNG", save_all=True, append_images=images[1:])


def animated_webp(frames: int = 2) -> bytes:
    """An animated WebP with ``frames`` distinct solid-colour frames."""
    images = [Image.new("RGB", (32, 32), (0, 60 * i, 255 - 60 * i)) for i in range(frames)]
    return save(images[0], "WEBP", save_all=True, append_images=images[1:], duration=100)


def multipage_tiff(pages: int = 2) -> bytes:
    """A TIFF with ``pages`` pages."""
    images = [Image.fromarray(gradient(32, 24)) for _ in range(pages)]
    return save(images[0], "TIFF", save_all=True, append_images=images[1:])


def mpo_jpeg() -> bytes:
    """A two-picture MPO (a JPEG plus a second picture, as stereo/depth cameras write).

    The first picture is red/blue halves; a decoder should return that one.
    """
    first = Image.fromarray(_halves(48, 32, RED, BLUE))
    second = Image.new("RGB", (48, 32), (0, 255, 0))
    return save(first, "MPO", save_all=True, append_images=[second], quality=95)


def cmyk_jpeg(w: int = 32, h: int = 24) -> bytes:
    """A CMYK JPEG: left half pure red (C=0 M=Y=255 K=0), right half pure blue (C=M=255)."""
    cmyk = np.zeros((h, w, 4), np.uint8)
    cmyk[:, : w // 2] = (0, 255, 255, 0)
    cmyk[:, w // 2 :] = (255, 255, 0, 0)
    return save(Image.frombytes("CMYK", (w, h), cmyk.tobytes()), "JPEG", quality=95)


def png16(w: int = 256, h: int = 16) -> bytes:
    """A 16-bit grayscale PNG whose column ``x`` holds ``x * 257`` (0..65535 for w=256)."""
    values = (np.arange(w, dtype=np.uint16) * 257)[None, :].repeat(h, axis=0)
    return save(Image.fromarray(values), "PNG")


def rgba_png(w: int = 256, h: int = 16) -> bytes:
    """A red RGBA PNG whose alpha equals the column index ``x`` (0 transparent .. 255 opaque)."""
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[:, :, 0] = 255
    rgba[:, :, 3] = np.arange(w, dtype=np.uint8)[None, :]
    return save(Image.fromarray(rgba), "PNG")


def palette_png(w: int = 32, h: int = 16) -> bytes:
    """A palette PNG with tRNS: index 0 transparent (left half), index 1 blue (right half)."""
    indices = np.zeros((h, w), np.uint8)
    indices[:, w // 2 :] = 1
    image = Image.frombytes("P", (w, h), indices.tobytes())
    image.putpalette([0, 255, 0, *BLUE] + [0, 0, 0] * 254)  # index 0 would be green if opaque
    return save(image, "PNG", transparency=0)


def exif_rotated_jpeg(w: int = 40, h: int = 24) -> bytes:
    """A ``w x h`` JPEG with EXIF orientation 6 (display rotated 90 degrees clockwise).

    Stored content: blue, with a red 8x8 block in the stored top-left corner. Displayed
    upright the image is ``h x w`` and the red block sits in the top-right corner.
    """
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, :] = BLUE
    pixels[:8, :8] = RED
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return save(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def _halves(w: int, h: int, left: tuple, right: tuple) -> np.ndarray:
    """uint8 ``(h, w, 3)`` with the left half ``left`` and the right half ``right``."""
    pixels = np.empty((h, w, 3), np.uint8)
    pixels[:, : w // 2] = left
    pixels[:, w // 2 :] = right
    return pixels
