"""Generated samples stylised in the same request (sample/sample_grid with style_name or an
uploaded style), through a real `bentoml serve`: the same images as calling sample, enlarging each
to 256 px, then stylize."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests
from PIL import Image

from bench import hostile_images as hi
from tests.helpers import image_of, post, stylize


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def enlarged(sample_b64: str) -> bytes:
    small = Image.open(io.BytesIO(base64.b64decode(sample_b64)))  # the generator's own size (32 px)
    out = io.BytesIO()
    small.resize((256, 256), Image.Resampling.LANCZOS).save(out, "PNG")  # the documented enlargement
    return out.getvalue()


def test_sample_with_a_style_equals_sample_then_stylize(server):
    painted = post(server, "sample", {"n": 3, "seed": 11, "style_name": "wheat_field", "strength": 0.7})
    assert painted.status_code == 200, painted.text
    body = painted.json()
    assert body["style"] == "preset:wheat_field" and (body["width"], body["height"]) == (256, 256)
    assert body["seeds"] == [11, 12, 13]
    plain = post(server, "sample", {"n": 3, "seed": 11}).json()
    for sample_b64, painted_b64 in zip(plain["images"], body["images"]):
        alone = stylize(server, enlarged(sample_b64), style_name="wheat_field", strength=0.7, max_side=256)
        assert alone.status_code == 200, alone.text
        assert np.array_equal(pixels(painted_b64), image_of(alone))
    assert not np.array_equal(pixels(body["images"][0]), pixels(body["images"][1]))


def test_sample_with_an_uploaded_style_blend_equals_sample_then_stylize(server):
    """multipart/form-data: an uploaded style blended with a preset, as stylize blends them."""
    style = hi.jpeg(120, 90)
    fields = {"n": "2", "seed": "5", "style_name": "pebbles", "weights": "1,3", "strength": "0.8"}
    r = requests.post(
        f"{server.url}/sample", files=[("style", ("mine.jpg", style, "image/jpeg"))], data=fields, timeout=120
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["style"].startswith("preset:pebbles x0.25, upload") and body["style"].endswith("x0.75")
    plain = post(server, "sample", {"n": 2, "seed": 5}).json()
    for sample_b64, painted_b64 in zip(plain["images"], body["images"]):
        alone = stylize(
            server, enlarged(sample_b64), style, style_name="pebbles", weights="1,3", strength=0.8, max_side=256
        )
        assert alone.status_code == 200, alone.text
        assert np.array_equal(pixels(painted_b64), image_of(alone))
    grid = requests.post(
        f"{server.url}/sample_grid",
        files=[("style", ("mine.jpg", style, "image/jpeg"))],
        data={"n": "2", "seed": "5"},
        timeout=120,
    )
    assert grid.status_code == 200 and grid.headers["X-Atelier-Style"] == "upload (cached statistics)"


def test_a_bad_style_upload_to_sample_is_a_4xx_naming_it(server):
    for files, data, needle in [
        ([("style", ("s.png", hi.truncated_png(), "image/png"))], {"n": "1"}, "truncated"),
        ([("style", ("s.gif", hi.animated_gif(3), "image/gif"))], {"n": "1"}, "animated"),
        ([("style", (None, "http://example.com/s.png"))], {"n": "1"}, "must be an uploaded file"),
    ]:
        r = requests.post(f"{server.url}/sample", files=files, data=data, timeout=60)
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["style"], r.text
        assert needle in r.json()["error"], r.text
    r = post(server, "sample", {"n": 1, "weights": "1"})
    assert r.status_code == 400 and "give style_name and/or style" in r.json()["error"]


def test_sample_grid_with_a_style_tiles_the_painted_samples(server):
    grid = post(server, "sample_grid", {"n": 4, "seed": 3, "style_name": "wheat_field"})
    assert grid.status_code == 200 and grid.headers["X-Atelier-Seed"] == "3"
    tiles = [
        pixels(b64) for b64 in post(server, "sample", {"n": 4, "seed": 3, "style_name": "wheat_field"}).json()["images"]
    ]
    image = np.asarray(Image.open(io.BytesIO(grid.content)).convert("RGB"))
    assert image.shape == (2 * 256 + 2, 2 * 256 + 2, 3)  # 2 x 2 tiles, 2-px gaps
    assert np.array_equal(image[:256, :256], tiles[0]) and np.array_equal(image[258:, 258:], tiles[3])


def test_a_style_the_service_does_not_have_is_a_400_and_plain_samples_are_unchanged(server):
    r = post(server, "sample", {"n": 1, "seed": 1, "style_name": "vangogh"})
    assert r.status_code == 400 and "unknown preset 'vangogh'" in r.json()["error"]
    assert post(server, "sample", {"n": 1, "seed": 1, "strength": 2}).status_code == 400
    plain = post(server, "sample", {"n": 1, "seed": 1}).json()
    assert plain["style"] is None and plain["width"] == 32
