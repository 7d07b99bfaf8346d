"""Tests for service/images.py: hostile uploads are rejected clearly, every mode decodes to RGB."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from bench import hostile_images as hostile
from service.images import (
    FORMATS,
    ImageInputError,
    check_header,
    decode_image,
    encode_image,
    fit_long_side,
    tile_grid,
    to_rgb_array,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def rejected(data: bytes, field: str = "content", **limits) -> str:
    """Decode ``data``, expect ImageInputError for ``field``, return its str()."""
    with pytest.raises(ImageInputError) as info:
        decode_image(data, field, **limits)
    assert info.value.field == field
    assert str(info.value) == f"{field}: {info.value.message}"
    return str(info.value)


def column_ramp() -> np.ndarray:
    """0..255 by column, as the 16-bit and alpha builders lay their values out."""
    return np.arange(256)


# --- the error type ----------------------------------------------------------------------


def test_error_carries_field_and_message():
    error = ImageInputError("style", "file is empty")
    assert isinstance(error, ValueError)
    assert (error.field, error.message) == ("style", "file is empty")
    assert str(error) == "style: file is empty"


# --- rejected uploads --------------------------------------------------------------------


def test_empty_file():
    assert rejected(hostile.empty()) == "content: file is empty"


def test_file_over_byte_limit_states_size_and_limit():
    data = hostile.png() + b"\0" * (3 * 1024 * 1024 // 2)
    message = rejected(data, "style", max_bytes=1024 * 1024)
    assert message == "style: file is 1.5 MB; the limit is 1 MB"


def test_not_an_image():
    message = rejected(hostile.non_image_bytes(), "style")
    assert message.startswith("style: not an image (could not identify format)")


def test_format_outside_allow_list_is_rejected_with_the_list():
    message = rejected(hostile.unsupported_format())  # a valid ICO file
    assert "could not identify format" in message
    assert "PNG, JPEG, WebP, GIF, BMP, TIFF" in message


def test_huge_header_rejected_before_decoding_and_pillow_settings_untouched():
    data = hostile.huge_header_png(50000, 50000)
    assert len(data) < 500  # a tiny file claiming 2.5 gigapixels
    limit, filters = Image.MAX_IMAGE_PIXELS, warnings.filters[:]
    message = rejected(data)
    assert message == "content: image is 2500.0 megapixels; the limit is 40 megapixels"
    assert Image.MAX_IMAGE_PIXELS == limit
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert warnings.filters == filters


def test_header_over_our_limit_names_the_dimensions():
    message = rejected(hostile.huge_header_png(10000, 5000))
    assert message == "content: image is 10000x5000 = 50.0 megapixels; the limit is 40 megapixels"


def test_pillow_bomb_warning_does_not_escape():
    # 120 MP is above Pillow's warning threshold (~89 MP) but below its error threshold.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = rejected(hostile.huge_header_png(12000, 10000))
    assert "12000x10000 = 120.0 megapixels" in message


def test_pixel_limit_is_a_parameter():
    message = rejected(hostile.png(100, 50), max_pixels=4000)
    assert "100x50 = 0.0 megapixels; the limit is 0.004 megapixels" in message
    assert decode_image(hostile.png(100, 50), "content", max_pixels=5000).shape == (50, 100, 3)


def test_too_small():
    message = rejected(hostile.one_by_one_png())
    assert message == "content: image is 1x1 pixels; each side must be at least 16 pixels"
    assert "at least 32 pixels" in rejected(hostile.png(64, 20), min_side=32)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (hostile.animated_gif(3), "animated images are not supported here (GIF with 3 frames)"),
        (hostile.animated_png(2), "animated images are not supported here (PNG with 2 frames)"),
        (hostile.animated_webp(2), "animated images are not supported here (WEBP with 2 frames)"),
        (hostile.multipage_tiff(2), "multi-page images are not supported here (TIFF with 2 frames)"),
    ],
    ids=["gif", "apng", "webp", "tiff"],
)
def test_multi_frame_rejected_where_a_still_is_expected(data, expected):
    message = rejected(data, "style")
    assert expected in message and "send a single frame" in message


def test_truncated_data():
    message = rejected(hostile.truncated_png())
    assert message.startswith("content: truncated or corrupt image data (")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt EXIF/MPO
def test_mutated_files_only_ever_raise_image_input_error():
    """Deterministic mini-fuzz: flipped bytes and cut-offs never escape as other exceptions."""
    rng = np.random.default_rng(0)
    seeds = [
        hostile.png(),
        hostile.jpeg(),
        hostile.webp(),
        hostile.gif(),
        hostile.tiff(),
        hostile.bmp(),
        hostile.png16(),
        hostile.exif_rotated_jpeg(),
        hostile.mpo_jpeg(),
    ]
    for trial in range(300):
        data = bytearray(seeds[trial % len(seeds)])
        for position in rng.integers(0, len(data), size=3):
            data[position] = rng.integers(0, 256)
        if trial % 3 == 0:
            data = data[: rng.integers(1, len(data))]
        try:
            pixels = decode_image(bytes(data), "content")
        except ImageInputError:
            continue
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8


def test_corrupt_header_crc_is_not_an_image():
    data = bytearray(hostile.png())
    data[30] ^= 0xFF  # break the IHDR checksum
    assert "not an image" in rejected(bytes(data))


# --- accepted formats and modes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "tolerance"),
    [(hostile.png, 0), (hostile.bmp, 0), (hostile.tiff, 0), (hostile.jpeg, 4), (hostile.webp, 4)],
    ids=["png", "bmp", "tiff", "jpeg", "webp"],
)
def test_formats_decode_to_rgb_uint8(build, tolerance):
    pixels = decode_image(build(32, 24), "content")
    assert pixels.shape == (24, 32, 3) and pixels.dtype == np.uint8
    error = np.abs(pixels.astype(int) - hostile.gradient(32, 24)).mean()
    assert error <= tolerance


def test_single_frame_gif_is_palette_decoded():
    pixels = decode_image(hostile.gif(32, 24), "content")
    assert (pixels[:, :16] == hostile.RED).all() and (pixels[:, 16:] == hostile.BLUE).all()


def test_mpo_jpeg_decodes_first_picture():
    pixels = decode_image(hostile.mpo_jpeg(), "content")
    assert pixels.shape == (32, 48, 3)
    assert np.abs(pixels[:, :20].astype(int) - hostile.RED).max() < 12


def test_png16_scaled_by_high_byte_not_clipped():
    pixels = decode_image(hostile.png16(), "content")
    assert pixels.shape == (16, 256, 3) and pixels.dtype == np.uint8
    assert (pixels == column_ramp()[None, :, None]).all()


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_16_bit_range_in_tiff_modes(mode):
    values = (column_ramp() * 257)[None, :].repeat(16, axis=0)
    raw = values.astype(">u2" if mode == "I;16B" else "<i4").tobytes()
    image = Image.frombytes(mode, (256, 16), raw)
    pixels = decode_image(hostile.save(image, "TIFF"), "content")
    assert (pixels == column_ramp()[None, :, None]).all()


@pytest.mark.parametrize(("scale", "expected"), [(1 / 255, column_ramp()), (1.0, column_ramp())])
def test_float_tiff(scale, expected):
    values = (column_ramp() * scale)[None, :].repeat(16, axis=0).astype(np.float32)
    pixels = decode_image(hostile.save(Image.fromarray(values), "TIFF"), "content")
    assert np.abs(pixels[:, :, 1].astype(int) - expected[None, :]).max() <= 1


def test_rgba_composited_over_white():
    pixels = decode_image(hostile.rgba_png(), "content").astype(int)
    assert (pixels[:, :, 0] == 255).all()
    expected = 255 - column_ramp()  # red at alpha a over white: G = B = 255 - a
    assert np.abs(pixels[:, :, 1] - expected[None, :]).max() <= 1
    assert (pixels[:, :, 1] == pixels[:, :, 2]).all()


def test_palette_transparency_becomes_white():
    pixels = decode_image(hostile.palette_png(32, 16), "content")
    assert (pixels[:, :16] == 255).all()
    assert (pixels[:, 16:] == hostile.BLUE).all()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P"])
def test_gray_and_palette_modes_replicate_to_three_channels(mode):
    gray = Image.fromarray(hostile.gradient(32, 16)[:, :, 0]).convert(mode)
    pixels = decode_image(hostile.save(gray, "PNG"), "content")
    assert pixels.shape == (16, 32, 3)
    assert (pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 1] == pixels[:, :, 2]).all()


def test_cmyk_jpeg_colours():
    pixels = decode_image(hostile.cmyk_jpeg(32, 24), "content").astype(int)
    assert np.abs(pixels[:, 2:14] - hostile.RED).max() < 16
    assert np.abs(pixels[:, 18:30] - hostile.BLUE).max() < 16


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_colour_spaces_in_tiff(mode):
    image = Image.new("RGB", (16, 16), (200, 40, 90)).convert(mode)
    pixels = decode_image(hostile.save(image, "TIFF"), "content").astype(int)
    assert np.abs(pixels - (200, 40, 90)).max() < 8


def test_hsv_converts_to_rgb():
    # No accepted file format stores HSV; check the conversion step itself.
    pixels = to_rgb_array(Image.new("HSV", (4, 4), (0, 255, 255)), "content")
    assert (pixels == hostile.RED).all() and pixels.dtype == np.uint8


def test_exif_orientation_6_rotates_clockwise():
    pixels = decode_image(hostile.exif_rotated_jpeg(40, 24), "content").astype(int)
    assert pixels.shape == (40, 24, 3)  # stored 40 wide, 24 high; shown 24 wide, 40 high
    assert np.abs(pixels[1:7, -7:-1] - hostile.RED).max() < 30  # stored top-left -> top-right
    assert np.abs(pixels[1:7, 1:7] - hostile.BLUE).max() < 30
    assert np.abs(pixels[-7:-1, 1:7] - hostile.BLUE).max() < 30


# --- encoding ----------------------------------------------------------------------------


def test_png_round_trip_is_exact():
    rgb = hostile.gradient(40, 30)
    data = encode_image(rgb, "png")
    assert data.startswith(PNG_MAGIC)
    assert (decode_image(data, "x") == rgb).all()


@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 1)])
def test_png_grayscale_round_trip(shape):
    gray = hostile.gradient(40, 30)[:, :, 0].reshape(shape)
    decoded = decode_image(encode_image(gray, "png"), "x")
    assert (decoded == gray.reshape(30, 40, 1)).all()


@pytest.mark.parametrize(("fmt", "magic"), [("jpeg", JPEG_MAGIC), ("webp", b"RIFF")])
def test_lossy_round_trip_is_close(fmt, magic):
    rgb = hostile.gradient(64, 48)
    data = encode_image(rgb, fmt)
    assert data.startswith(magic) and (fmt != "webp" or data[8:12] == b"WEBP")
    assert np.abs(decode_image(data, "x").astype(int) - rgb).mean() < 3
    assert len(encode_image(rgb, fmt, quality=20)) < len(data)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
def test_each_output_format_encodes_that_format_with_its_media_type(fmt):
    encoded = Image.open(io.BytesIO(encode_image(np.full((8, 12, 3), 90, np.uint8), fmt)))
    assert encoded.size == (12, 8)
    assert Image.MIME[encoded.format] == FORMATS[fmt]  # Pillow's own table of media types


@pytest.mark.parametrize(
    ("pixels", "fmt"),
    [
        (np.zeros((8, 8, 3), np.float32), "png"),
        (np.zeros((8, 8, 4), np.uint8), "png"),
        (np.zeros((0, 8, 3), np.uint8), "png"),
        (np.zeros((8, 8, 3), np.uint8), "bmp"),
    ],
    ids=["float", "rgba", "empty", "bmp"],
)
def test_encode_rejects_bad_input(pixels, fmt):
    with pytest.raises(ValueError):
        encode_image(pixels, fmt)


# --- grids -------------------------------------------------------------------------------


def tiles(count: int, h: int = 6, w: int = 8, c: int = 3) -> np.ndarray:
    """``count`` solid tiles with values 1..count."""
    values = np.arange(1, count + 1, dtype=np.uint8)[:, None, None, None]
    return np.broadcast_to(values, (count, h, w, c)).copy()


@pytest.mark.parametrize(
    ("count", "ncols", "shape"),
    [
        (1, None, (6, 8, 3)),
        (4, None, (14, 18, 3)),
        (5, None, (14, 28, 3)),  # 3 columns x 2 rows
        (3, 1, (22, 8, 3)),
        (3, 10, (6, 28, 3)),  # columns capped at N
    ],
)
def test_tile_grid_shapes(count, ncols, shape):
    assert tile_grid(tiles(count), ncols).shape == shape


def test_tile_grid_layout_and_gaps():
    grid = tile_grid(tiles(5), pad=2)
    assert (grid[0:6, 0:8] == 1).all() and (grid[0:6, 10:18] == 2).all()
    assert (grid[8:14, 0:8] == 4).all() and (grid[8:14, 10:18] == 5).all()
    assert (grid[:, 8:10] == 0).all() and (grid[6:8, :] == 0).all()
    assert (grid[8:14, 20:28] == 0).all()  # the unused sixth cell
    assert tile_grid(tiles(4, c=1), pad=0).shape == (12, 16, 1)


def test_tile_grid_rejects_bad_input():
    with pytest.raises(ValueError):
        tile_grid(np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        tile_grid(tiles(2), ncols=0)


# --- decoding straight to the size that will be used ----------------------------------------


def _photo_like(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), ((x + y) % 256)], axis=2).astype(np.uint8)


def _lanczos(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)).astype(int)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("size, side", [((2400, 1800), 512), ((1801, 3001), 700), ((4000, 17), 2048)])
def test_a_large_image_decodes_to_the_exact_size_of_the_resize_rule(fmt, size, side):
    """Reduced decoding (JPEG DCT scaling, integer box reduce) lands on exactly fit_long_side, and looks
    like a full decode followed by a Lanczos resize."""
    pixels = _photo_like(*size)
    data = hostile.save(Image.fromarray(pixels), fmt, **({"quality": 95} if fmt != "PNG" else {}))
    expected = fit_long_side(*size, side)
    decoded = decode_image(data, "content", max_side=side)
    assert (decoded.shape[1], decoded.shape[0]) == expected
    reference = _lanczos(decode_image(data, "content"), expected)
    assert np.abs(decoded.astype(int) - reference).mean() < 4


def test_a_small_image_is_not_resized_by_max_side():
    data = hostile.png(300, 200)
    assert (decode_image(data, "content", max_side=512) == decode_image(data, "content")).all()


def test_reduced_decoding_keeps_exif_orientation():
    """A landscape JPEG stored with orientation 6 (rotate 90): upright it is portrait."""
    data = hostile.exif_rotated_jpeg(1600, 1000)
    full = decode_image(data, "content")
    assert full.shape[:2] == (1600, 1000)
    reduced = decode_image(data, "content", max_side=400)
    assert reduced.shape[:2] == (400, 250)
    assert np.abs(reduced.astype(int) - _lanczos(full, (250, 400))).mean() < 4
    assert check_header(data, "content") == (1000, 1600)


def test_check_header_refuses_what_decoding_would_before_decoding():
    assert check_header(hostile.png(64, 48), "content") == (64, 48)
    for data, needle in [
        (hostile.empty(), "empty"),
        (hostile.huge_header_png(), "megapixels"),
        (hostile.animated_gif(), "animated"),
        (hostile.one_by_one_png(), "at least 16"),
    ]:
        with pytest.raises(ImageInputError, match=needle):
            check_header(data, "content")


def _png_chunks(data: bytes) -> list[bytes]:
    """A PNG's chunks, each as its full bytes (length, type, payload, CRC)."""
    chunks, offset = [], len(PNG_MAGIC)
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return chunks


def test_check_header_refuses_a_damaged_png_without_decoding_it():
    """Cut short, or one byte of pixel data changed: refused from the chunks' checksums
    (before it would wait for a slot); bytes after IEND are no damage."""
    data = hostile.png(64, 48)
    idat = data.index(b"IDAT")
    damaged = bytearray(data)
    damaged[idat + 10] ^= 0xFF
    for bad, needle in [
        (hostile.truncated_png(), "ends inside its 'IDAT' chunk"),
        (bytes(damaged), "bad checksum in the PNG's 'IDAT' chunk"),
        (data[:-12], "ends before its IEND chunk"),
    ]:
        with pytest.raises(ImageInputError, match=needle):
            check_header(bad, "content")
        assert "truncated or corrupt" in rejected(bad)
    assert check_header(data + b"appended by some camera app", "content") == (64, 48)


def test_png_exif_orientation_found_after_the_image_data():
    """The PNG spec lets eXIf come after IDAT; the orientation is read from there too."""
    pixels = hostile.gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", exif=exif)
    chunks = _png_chunks(buffer.getvalue())
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c is not exif_chunk]
    moved = PNG_MAGIC + b"".join(rest[:-1]) + exif_chunk + rest[-1]  # just before IEND
    assert [c[4:8] for c in _png_chunks(moved)][-2:] == [b"eXIf", b"IEND"]
    assert check_header(moved, "content") == (20, 40)
    np.testing.assert_array_equal(decode_image(moved, "content"), np.rot90(pixels, k=-1))
