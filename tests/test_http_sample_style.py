"""Generated samples stylised in the same request (sample/sample_grid with style_name), through a
real `bentoml serve`: the same images as calling sample, enlarging each to 256 px, then stylize."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.test_http_gan import post
from tests.test_http_style import image_of, stylize


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_sample_with_a_style_equals_sample_then_stylize(server):
    painted = post(server, "sample", {"n": 3, "seed": 11, "style_name": "brick", "strength": 0.7})
    assert painted.status_code == 200, painted.text
    body = painted.json()
    assert body["style"] == "brick" and (body["width"], body["height"]) == (256, 256) and body["seeds"] == [11, 12, 13]
    plain = post(server, "sample", {"n": 3, "seed": 11}).json()
    for sample_b64, painted_b64 in zip(plain["images"], body["images"]):
        small = Image.open(io.BytesIO(base64.b64decode(sample_b64)))  # the generator's own size (32 px)
        enlarged = io.BytesIO()
        small.resize((256, 256), Image.Resampling.LANCZOS).save(enlarged, "PNG")  # the documented enlargement
        alone = stylize(server, enlarged.getvalue(), style_name="brick", strength=0.7, max_side=256)
        assert alone.status_code == 200, alone.text
        assert np.array_equal(pixels(painted_b64), image_of(alone))
    assert not np.array_equal(pixels(body["images"][0]), pixels(body["images"][1]))


def test_sample_grid_with_a_style_tiles_the_painted_samples(server):
    grid = post(server, "sample_grid", {"n": 4, "seed": 3, "style_name": "brick"})
    assert grid.status_code == 200 and grid.headers["X-Atelier-Seed"] == "3"
    tiles = [pixels(b64) for b64 in post(server, "sample", {"n": 4, "seed": 3, "style_name": "brick"}).json()["images"]]
    image = np.asarray(Image.open(io.BytesIO(grid.content)).convert("RGB"))
    assert image.shape == (2 * 256 + 2, 2 * 256 + 2, 3)  # 2 x 2 tiles, 2-px gaps
    assert np.array_equal(image[:256, :256], tiles[0]) and np.array_equal(image[258:, 258:], tiles[3])


def test_a_style_the_service_does_not_have_is_a_400_and_plain_samples_are_unchanged(server):
    r = post(server, "sample", {"n": 1, "seed": 1, "style_name": "vangogh"})
    assert r.status_code == 400 and "unknown preset 'vangogh'" in r.json()["error"]
    assert post(server, "sample", {"n": 1, "seed": 1, "strength": 2}).status_code == 400
    plain = post(server, "sample", {"n": 1, "seed": 1}).json()
    assert plain["style"] is None and plain["width"] == 32
