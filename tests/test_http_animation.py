"""Animated GIF and WebP through a real `bentoml serve`: every frame repainted in one style,
frame timing and loop kept, no flicker, limits refused from the header; a still GIF as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageSequence

from bench import hostile_images as hi
from tests.helpers import image_of, stylize

FLICKER_LIMIT = 1.5  # output frame-to-frame change / input frame-to-frame change (measured 1.08-1.10)


def pan(frames: int = 8, width: int = 160, height: int = 120, step: int = 3) -> list[np.ndarray]:
    """A still photo (scikit-image's coffee cup) seen through a window moving ``step`` px a frame."""
    photo = np.asarray(Image.fromarray(skimage.data.coffee()).resize((300, 200), Image.Resampling.LANCZOS))
    return [np.ascontiguousarray(photo[40 : 40 + height, 10 + step * i : 10 + step * i + width]) for i in range(frames)]


def animation(frames: list[np.ndarray], fmt: str, durations: list[int], **options) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, fmt, save_all=True, append_images=images[1:], duration=durations, **options)
    return buffer.getvalue()


def frames_of(data: bytes) -> tuple[Image.Image, list[np.ndarray], list[int]]:
    image = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for frame in ImageSequence.Iterator(image):
        frames.append(np.asarray(frame.convert("RGB")))
        durations.append(frame.info["duration"])
    return image, frames, durations


def change(frames: list[np.ndarray]) -> float:
    """Mean absolute difference between consecutive frames."""
    return float(np.mean([np.abs(b.astype(int) - a.astype(int)).mean() for a, b in zip(frames, frames[1:])]))


@pytest.mark.parametrize(
    "fmt, options", [("GIF", {"loop": 2}), ("WEBP", {"loop": 0, "lossless": True})], ids=["gif", "webp"]
)
def test_an_animation_comes_back_animated_with_its_timing_and_loop_without_flicker(server, fmt, options):
    source = pan()
    durations = [40, 60, 80, 100, 120, 140, 160, 180]
    r = stylize(server, animation(source, fmt, durations, **options), style_name="wheat_field")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"image/{fmt.lower()}" and r.headers["X-Atelier-Frames"] == "8"
    image, frames, got_durations = frames_of(r.content)
    assert image.format == fmt and image.n_frames == 8 and image.info["loop"] == options["loop"]
    assert got_durations == durations
    assert all(f.shape == (120, 160, 3) for f in frames) and r.headers["X-Atelier-Size"] == "160x120"
    decoded_source = frames_of(animation(source, fmt, durations, **options))[1]  # what the service decoded
    assert np.abs(frames[0].astype(int) - decoded_source[0].astype(int)).mean() > 10  # repainted, not passed through
    ratio = change(frames) / change(decoded_source)
    print(f"{fmt}: frame-to-frame change, output / input = {ratio:.2f}")
    assert ratio < FLICKER_LIMIT


def test_every_frame_is_painted_as_the_same_frame_alone_would_be(server):
    """One style for all frames: each output frame is what stylising that frame as a still gives
    (up to the WebP encoding)."""
    source = pan(frames=3)
    r = stylize(server, animation(source, "WEBP", [100] * 3, lossless=True), style_name="wheat_field", format="webp")
    assert r.status_code == 200, r.text
    for frame, still in zip(frames_of(r.content)[1], source):
        alone = stylize(server, hi.save(Image.fromarray(still), "PNG"), style_name="wheat_field")
        assert np.abs(frame.astype(int) - image_of(alone).astype(int)).mean() < 3


def test_format_turns_a_gif_into_a_webp_and_a_gif_without_loop_count_plays_once(server):
    r = stylize(server, animation(pan(frames=3), "GIF", [70, 80, 90]), style_name="wheat_field", format="webp")
    assert r.status_code == 200, r.text
    image, frames, durations = frames_of(r.content)
    assert image.format == "WEBP" and len(frames) == 3 and durations == [70, 80, 90] and image.info["loop"] == 1


def test_a_still_gif_is_painted_as_before(server):
    """A single-frame GIF is a still image: a PNG back, the same as the same pixels sent as PNG."""
    gif = hi.gif()
    as_png = hi.save(Image.open(io.BytesIO(gif)).convert("RGB"), "PNG")
    r = stylize(server, gif, style_name="wheat_field")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and "X-Atelier-Frames" not in r.headers
    assert np.array_equal(image_of(r), image_of(stylize(server, as_png, style_name="wheat_field")))
    still_gif = stylize(server, as_png, style_name="wheat_field", format="gif")
    assert still_gif.headers["content-type"] == "image/gif" and Image.open(io.BytesIO(still_gif.content)).n_frames == 1


def test_more_work_than_one_request_takes_is_413_from_the_header(server):
    frames = [np.full((600, 600, 3), (i * 5, 80, 160), np.uint8) for i in range(50)]
    r = stylize(server, animation(frames, "GIF", [50] * 50), style_name="wheat_field", max_side=2048)
    assert r.status_code == 413, r.text
    assert "50 frames of 600x600 are 18.0 megapixels to repaint; the limit is 16" in r.json()["error"]
    ok = stylize(server, animation(frames[:4], "GIF", [50] * 4), style_name="wheat_field", max_side=64)
    assert ok.status_code == 200 and ok.headers["X-Atelier-Size"] == "64x64"
