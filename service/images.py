"""Safe image decoding and encoding for the service endpoints.

``decode_image`` turns untrusted upload bytes into an ``(H, W, 3)`` uint8 RGB array, or raises
``ImageInputError`` with a message a user can act on. Every limit is checked from the file
header before any pixel is decoded, and no process-wide Pillow setting is changed: the
decompression-bomb limit and ``LOAD_TRUNCATED_IMAGES`` keep their defaults.

``encode_image`` and ``tile_grid`` turn model outputs back into PNG/JPEG/WebP bytes.
Only numpy, Pillow and the standard library are used here (no torch).
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import ApiError

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
# zlib level of the PNGs the service writes: Pillow's default (6) took more than the model's time,
# level 1 a quarter of it for files a little larger (docs/performance.md, "Around the model").
PNG_COMPRESS_LEVEL = 1

# Pillow format names accepted on upload; only these parsers ever see the bytes.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
_SUPPORTED_TEXT = "PNG, JPEG, WebP, GIF, BMP, TIFF"
ANIMATED_FORMATS = ("GIF", "WEBP")  # multi-frame files taken as animations where animations are accepted
# Pillow's JPEG opener returns format "MPO" for a JPEG carrying extra pictures (stereo pairs,
# depth maps, as some phones write). Those frames are not animation: decode the first one.
_SINGLE_PICTURE_FORMATS = {"MPO"}

_MB = 1024 * 1024
_WHITE = (255, 255, 255)


class ImageInputError(ApiError, ValueError):
    """A user-supplied image was rejected; ``field`` names the form field it came from (status 400;
    413 for more work than the service takes in one request)."""


def decode_image(
    data: bytes,
    field: str,
    *,
    max_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 40_000_000,
    min_side: int = 16,
    max_side: int | None = None,
) -> np.ndarray:
    """Decode untrusted image bytes to a uint8 ``(H, W, 3)`` RGB array, EXIF orientation applied.

    With ``max_side``, an image whose long side is longer comes back resized to exactly
    ``fit_long_side(width, height, max_side)`` of its upright size, without ever holding more
    than one full-size copy: a JPEG is decoded at a reduced scale (1/2, 1/4, 1/8) straight from
    its DCT data, other formats are reduced by an integer box filter right after decoding, and
    the last step is a Lanczos resize.

    Raises ``ImageInputError(field, ...)`` for empty or oversized files, unknown or
    unsupported formats, too many pixels (judged from the header, before decoding), sides
    shorter than ``min_side``, animated images and truncated or corrupt pixel data.
    """
    _check_byte_size(data, field, max_bytes)
    with _open_checked(data, field, max_pixels, min_side) as opened:
        orientation = _orientation(opened, data, field)
        upright_size = _upright_size(opened, orientation)
        target = None
        if max_side is not None and max(upright_size) > max_side:
            target = fit_long_side(*upright_size, max_side)
            if opened.format == "JPEG":  # decode at the smallest DCT scale still >= the target
                width, height = opened.size
                scale = max_side / max(width, height)
                opened.draft(opened.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        _load_pixels(opened, field)
        image = _reduce_towards(opened, target, transposed=orientation in _TRANSPOSING)
        upright = _apply_orientation(image, orientation)
        pixels = to_rgb_array(upright, field)
    return pixels if target is None else resize_to(pixels, target)


def resize_to(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixels (H, W, C) uint8 resized to ``size`` = (width, height) with Pillow's Lanczos filter
    (the one resize of the service: uploads, animation frames, stylisation inputs); unchanged
    when already that size."""
    if (pixels.shape[1], pixels.shape[0]) == tuple(size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def fit_long_side(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so that the long side is ``side``, aspect kept, each side >= 1:
    the one rule for every resize (uploads, stylised outputs, presets)."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size an image of (width, height) is used at when its long side may be at most
    ``max_side``: ``fit_long_side`` when it is longer, unchanged otherwise (never enlarged)."""
    return fit_long_side(width, height, max_side) if max(width, height) > max_side else (width, height)


def check_header(
    data: bytes, field: str, *, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 40_000_000, min_side: int = 16
) -> tuple[int, int]:
    """Every check ``decode_image`` makes before decoding (size, format, pixels, sides, frames),
    without decoding: the image's upright (width, height), or ``ImageInputError``. Cheap enough to
    answer a bad upload at once, before it waits for a stylisation slot. A PNG's chunks are also
    read through and their checksums checked (no pixel is inflated), so that a truncated or
    damaged PNG is refused here too rather than after its wait."""
    width, height, _ = read_header(data, field, max_bytes=max_bytes, max_pixels=max_pixels, min_side=min_side)
    return width, height


def read_header(
    data: bytes,
    field: str,
    *,
    max_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 40_000_000,
    min_side: int = 16,
    max_frames: int = 1,
) -> tuple[int, int, int]:
    """``check_header`` that also accepts animations (GIF, WebP) of up to ``max_frames`` frames:
    (width, height, frames), frames counted without decoding any."""
    _check_byte_size(data, field, max_bytes)
    with _open_checked(data, field, max_pixels, min_side, max_frames) as opened:
        width, height = _upright_size(opened, _orientation(opened, data, field))
        return width, height, getattr(opened, "n_frames", 1)


def _check_byte_size(data: bytes, field: str, max_bytes: int) -> None:
    """Reject empty uploads and uploads above ``max_bytes``."""
    if not data:
        raise ImageInputError(field, "file is empty")
    if len(data) > max_bytes:
        raise ImageInputError(field, f"file is {len(data) / _MB:.1f} MB; the limit is {max_bytes / _MB:g} MB")


def _open_checked(data: bytes, field: str, max_pixels: int, min_side: int, max_frames: int = 1) -> Image.Image:
    """Identify the image lazily and check its header: format, size, frame count.

    Pillow's own DecompressionBombWarning is silenced here only (our ``max_pixels`` is the
    limit that applies); its DecompressionBombError (headers above twice Pillow's default
    limit) becomes the same "too large" error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except Image.DecompressionBombError as exc:
            raise ImageInputError(field, _bomb_message(str(exc), max_pixels)) from None
        except UnidentifiedImageError:
            raise ImageInputError(
                field,
                f"not an image (could not identify format); supported formats: {_SUPPORTED_TEXT}",
            ) from None
        except Exception as exc:  # a recognised but broken header: the input's fault
            raise ImageInputError(field, f"truncated or corrupt image header ({exc})") from None
        try:
            _check_header(img, field, max_pixels, min_side, max_frames)
        except BaseException:
            img.close()
            raise
    return img


def _check_header(img: Image.Image, field: str, max_pixels: int, min_side: int, max_frames: int = 1) -> None:
    """Apply the pixel, side and frame-count limits to an opened (not yet decoded) image."""
    width, height = img.size
    if width * height > max_pixels:
        raise ImageInputError(
            field,
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
            f"the limit is {max_pixels / 1e6:g} megapixels",
        )
    if min(width, height) < min_side:
        raise ImageInputError(field, f"image is {width}x{height} pixels; each side must be at least {min_side} pixels")
    try:
        frames = getattr(img, "n_frames", 1)  # GIF counts frames by skipping through them
    except Image.DecompressionBombError as exc:
        raise ImageInputError(field, _bomb_message(str(exc), max_pixels)) from None
    except Exception as exc:
        raise ImageInputError(field, f"truncated or corrupt image data ({exc})") from None
    if frames > 1 and img.format not in _SINGLE_PICTURE_FORMATS:
        if max_frames > 1 and img.format in ANIMATED_FORMATS:
            if frames > max_frames:
                raise ImageInputError(field, f"animation has {frames} frames; the limit is {max_frames}", status=413)
            return
        kind = "multi-page" if img.format == "TIFF" else "animated"
        where = (
            "animated GIF and WebP are taken as content only"
            if max_frames == 1 and img.format in ANIMATED_FORMATS
            else "animations are taken as GIF or WebP"
        )
        raise ImageInputError(
            field,
            f"{kind} images are not supported here ({img.format} with {frames} frames); send a single frame ({where})",
        )


def _bomb_message(pillow_message: str, max_pixels: int) -> str:
    """Phrase Pillow's DecompressionBombError like our own limit (it gives only a pixel count)."""
    limit = f"the limit is {max_pixels / 1e6:g} megapixels"
    match = re.search(r"\((\d+) pixels\)", pillow_message)
    if match is None:
        return f"image is too large; {limit}"
    return f"image is {int(match.group(1)) / 1e6:.1f} megapixels; {limit}"


def _load_pixels(img: Image.Image, field: str) -> None:
    """Decode the pixel data; any decoder failure means truncated or corrupt input."""
    try:
        img.load()
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise ImageInputError(field, f"truncated or corrupt image data ({exc})") from None


_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSING = (5, 6, 7, 8)  # orientations that swap width and height
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F")


def _orientation(img: Image.Image, data: bytes, field: str) -> int:
    """The EXIF orientation tag (1 = upright); broken EXIF is ignored, not fatal. A PNG's chunks
    are walked instead of asking Pillow, which decodes every pixel to look for an eXIf chunk
    after the image data (a 40-MP PNG: 160 MB and ~0.2 s, before any limit on the work applies)."""
    try:
        if img.format == "PNG":
            exif = Image.Exif()
            raw = _png_exif_checked(data, field)
            if raw:
                exif.load(raw)
        else:
            exif = img.getexif()
        value = exif.get(0x0112, 1)
    except ImageInputError:
        raise
    except Exception:  # a photo with an unreadable EXIF block is still a usable photo
        return 1
    return value if value in _TRANSPOSES else 1


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_exif_checked(data: bytes, field: str) -> bytes | None:
    """Walk a PNG's chunks up to IEND, checking each one's CRC, without inflating any pixel data;
    the eXIf chunk's payload if there is one. A truncated or damaged file: ``ImageInputError``."""
    view = memoryview(data)
    offset, exif = len(_PNG_SIGNATURE), None
    while True:
        if offset + 12 > len(data):
            raise ImageInputError(field, "truncated or corrupt image data (the PNG ends before its IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if end > len(data):
            raise ImageInputError(
                field, f"truncated or corrupt image data (the PNG ends inside its {kind.decode('latin-1')!r} chunk)"
            )
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[offset + 4 : end - 4]) != crc:
            raise ImageInputError(
                field, f"truncated or corrupt image data (bad checksum in the PNG's {kind.decode('latin-1')!r} chunk)"
            )
        if kind == b"eXIf":
            exif = bytes(view[offset + 8 : end - 4])
        if kind == b"IEND":
            return exif
        offset = end


def _upright_size(img: Image.Image, orientation: int) -> tuple[int, int]:
    """(width, height) as displayed: swapped for the orientations that transpose."""
    width, height = img.size
    return (height, width) if orientation in _TRANSPOSING else (width, height)


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag said (as ``ImageOps.exif_transpose`` does)."""
    return img.transpose(_TRANSPOSES[orientation]) if orientation in _TRANSPOSES else img


def _reduce_towards(img: Image.Image, target: tuple[int, int] | None, transposed: bool) -> Image.Image:
    """Shrink a decoded image by the largest integer factor that keeps it >= ``target`` (upright
    size), so that later steps (alpha compositing, rotation, conversion) work on a small copy."""
    if target is None or img.mode not in _REDUCIBLE_MODES:
        return img
    want_w, want_h = (target[1], target[0]) if transposed else target
    factor = min(img.width // want_w, img.height // want_h)
    return img.reduce(factor) if factor >= 2 else img


def to_rgb_array(img: Image.Image, field: str) -> np.ndarray:
    """Convert any decoded Pillow mode to uint8 RGB; transparency is composited over white."""
    if img.mode.startswith("I") or img.mode == "F":
        gray = _high_depth_to_uint8(np.asarray(img), img.mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE + (255,)), rgba)
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise ImageInputError(field, f"unsupported pixel format {img.mode} ({exc})") from None


def _has_alpha(img: Image.Image) -> bool:
    """True for modes with an alpha band and for palette/gray/RGB images with a tRNS entry."""
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16/32-bit integer or float grayscale to uint8.

    ``I;16*`` (and ``I``, Pillow's container for 16-bit data) are 0..65535: keep the high
    byte (``>> 8``). ``F`` in 0..1 is scaled by 255; any other float range is clipped to 0..255.
    """
    if mode == "F":
        values = values.astype(np.float64)
        if values.size and 0.0 <= values.min() and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return (wide >> 8).astype(np.uint8)


def encode_image(pixels: np.ndarray, fmt: str, quality: int = 92) -> bytes:
    """Encode uint8 RGB ``(H, W, 3)`` or grayscale ``(H, W)``/``(H, W, 1)`` pixels.

    ``fmt`` is a key of ``FORMATS``. PNG is lossless; JPEG and WebP use ``quality`` (1..100);
    GIF has 256 colours chosen for the image.
    Raises ``ValueError`` for a bad array, format or quality (these are programming errors).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")
    image = Image.fromarray(_as_encodable(pixels))
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "gif":  # 256 colours chosen for this image (median cut), Floyd-Steinberg dithered
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, "GIF")
    else:
        image.save(buffer, fmt.upper(), quality=quality)
    return buffer.getvalue()


def _as_encodable(pixels: np.ndarray) -> np.ndarray:
    """Validate dtype/shape and return a contiguous ``(H, W)`` or ``(H, W, 3)`` uint8 array."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        found = getattr(pixels, "dtype", type(pixels).__name__)
        raise ValueError(f"pixels must be a uint8 numpy array, got {found}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"pixels must be (H, W), (H, W, 1) or (H, W, 3), got {pixels.shape}")
    if min(pixels.shape[:2]) < 1:
        raise ValueError(f"pixels must not be empty, got {pixels.shape}")
    return np.ascontiguousarray(pixels)


def tile_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(N, H, W, C)`` uint8 images into one ``(rows*H + gaps, cols*W + gaps, C)`` image.

    ``ncols`` defaults to ``ceil(sqrt(N))`` (a near-square grid) and is capped at N; tiles are
    separated by ``pad`` pixels of value 0 (no outer border); unused cells stay 0.
    """
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] < 1:
        raise ValueError(f"images must be uint8 (N, H, W, C) with N >= 1, got {images.dtype} {images.shape}")
    count, height, width, channels = images.shape
    if ncols is None:
        ncols = math.ceil(math.sqrt(count))
    if ncols < 1 or pad < 0:
        raise ValueError(f"ncols must be >= 1 and pad >= 0, got ncols={ncols}, pad={pad}")
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    grid = np.zeros((nrows * height + (nrows - 1) * pad, ncols * width + (ncols - 1) * pad, channels), np.uint8)
    for index, tile in enumerate(images):
        top = (index // ncols) * (height + pad)
        left = (index % ncols) * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid
