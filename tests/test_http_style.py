"""`stylize` and `styles` against a real `bentoml serve` process, with hostile uploads.

The served style model is tiny decoders on RANDOM VGG weights: these tests prove the path
(decoding, limits, shapes, presets, blending, caching, colours), not the look — the quality report
does that.
"""

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from bench import hostile_images as hi
from service.runtime import cuda_problem
from tests.helpers import image_of, stylize

MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def test_preset_keeps_the_aspect_ratio(server):
    r = stylize(server, hi.png(96, 64), style_name="wheat_field")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-atelier-style"] == "preset:wheat_field"
    assert image_of(r).shape == (64, 96, 3)
    r = stylize(server, hi.png(300, 200), style_name="wheat_field", max_side=64)
    assert image_of(r).shape == (43, 64, 3)  # long side max_side, ratio kept (200/300*64 = 42.7)


def test_uploaded_style_is_cached_by_content_hash(server):
    style = hi.jpeg(80, 60)
    first = stylize(server, hi.png(64, 48), style)
    second = stylize(server, hi.png(64, 48), style)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-atelier-style"] == "upload"
    assert second.headers["x-atelier-style"] == "upload (cached statistics)"
    assert first.content == second.content


def test_strength_changes_the_output(server):
    outputs = [stylize(server, hi.png(64, 48), style_name="pebbles", strength=s).content for s in (0.0, 0.5, 1.0)]
    assert len(set(outputs)) == 3


def test_a_request_without_strength_is_painted_at_the_exports_default(server):
    """The export decides the default (its manifest's ``default_strength``, shown by ``info`` and in
    the OpenAPI document): a request without ``strength`` is that request with it, not full strength."""
    default = requests.post(f"{server.url}/info", json={}, timeout=30).json()["models"]["stylizer"]["default_strength"]
    assert 0 < default < 1  # this export's: below full strength
    content = hi.png(64, 48)
    unset = stylize(server, content, style_name="pebbles").content
    assert unset == stylize(server, content, style_name="pebbles", strength=default).content
    assert unset != stylize(server, content, style_name="pebbles", strength=1.0).content
    doc = requests.get(f"{server.url}/docs.json", timeout=10).json()
    form = doc["paths"]["/stylize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["strength"]["default"] == default


def test_preserve_color_takes_luminance_from_the_style_and_chroma_from_the_content(server):
    content = hi.png(64, 48)
    kept = image_of(stylize(server, content, style_name="wheat_field", preserve_color=True))
    plain = image_of(stylize(server, content, style_name="wheat_field"))
    original = np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
    # ITU-R BT.601 (JFIF) in numpy; the service goes through Pillow: 8-bit rounding on each trip.
    # Where a channel hit 0 or 255 the merged colour was outside RGB and got clipped: not compared.
    inside = ((kept > 0) & (kept < 255)).all(axis=-1)
    assert inside.mean() > 0.25
    assert np.abs(ycbcr(kept)[..., 0] - ycbcr(plain)[..., 0])[inside].max() <= 3  # the stylised luminance
    assert np.abs(ycbcr(kept)[..., 1:] - ycbcr(original)[..., 1:])[inside].max() <= 4  # the photo's chroma
    assert np.abs(ycbcr(plain)[..., 1:] - ycbcr(original)[..., 1:]).max() > 10  # which styling had changed


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
            128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
        ],
        axis=-1,
    )


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_formats(server, fmt):
    r = stylize(server, hi.jpeg(64, 48), style_name="chevrons", format=fmt)
    assert r.status_code == 200 and r.content.startswith(MAGIC[fmt])
    assert r.headers["content-type"] == f"image/{fmt}"


@pytest.mark.parametrize(
    "name, content, shape",
    [
        ("cmyk jpeg", hi.cmyk_jpeg(32, 24), (24, 32, 3)),
        ("16-bit png", hi.png16(64, 16), (16, 64, 3)),
        ("rgba png", hi.rgba_png(64, 16), (16, 64, 3)),
        ("palette png", hi.palette_png(32, 16), (16, 32, 3)),
        ("grayscale webp", hi.save(Image.new("L", (40, 30), 90), "WEBP"), (30, 40, 3)),
        ("exif-rotated jpeg", hi.exif_rotated_jpeg(40, 24), (40, 24, 3)),  # orientation 6: portrait
    ],
)
def test_unusual_but_valid_images_work(server, name, content, shape):
    r = stylize(server, content, style_name="wheat_field")
    assert r.status_code == 200, f"{name}: {r.text}"
    assert image_of(r).shape == shape, name
    r = stylize(server, hi.png(48, 32), content)  # the same file as the style image
    assert r.status_code == 200, f"{name} as style: {r.text}"


def test_styles_lists_presets_with_thumbnails(server):
    r = requests.post(f"{server.url}/styles", timeout=10)
    assert r.status_code == 200
    styles = {s["name"]: s for s in r.json()["styles"]}
    assert {"wheat_field", "pebbles", "chevrons", "my_style"} <= set(styles)
    assert styles["my_style"]["source"] == "file:mine/My Style.png" and styles["my_style"]["credit"] is None
    assert "van Gogh" in styles["wheat_field"]["credit"] and "stram 1.0.1" in styles["wheat_field"]["credit"]
    thumb = Image.open(io.BytesIO(base64.b64decode(styles["wheat_field"]["thumbnail"])))
    assert thumb.format == "JPEG" and max(thumb.size) <= 128
    assert stylize(server, hi.png(), style_name="my_style").status_code == 200


def test_info_shows_the_vgg_source_levels_quality_and_providers(server):
    info = requests.post(f"{server.url}/info", timeout=10).json()
    enc, sty = info["models"]["style_encoder"], info["models"]["stylizer"]
    assert enc["vgg"]["source"] == "random" and enc["vgg"]["random_weights"] is True
    # both sessions on the provider this host can start: CUDA where it loads, else the CPU
    assert enc["provider"] == sty["provider"] == ("CPUExecutionProvider" if cuda_problem() else "CUDAExecutionProvider")
    assert sty["levels"] == ["relu3_1", "relu2_1", "relu1_1"] and sty["transform"] == "wct"
    # the tiny export's pyramid (coarse 4, fine 2): the patches go in at 1/4, relu3_1 cells of 16 px
    assert sty["patches"] == {"scale": 4, "cell": 16, "detail_gain": 1.0}
    assert set(sty["quality"]["reconstruction_psnr_db"]["relu3_1"]) >= {"china", "flower", "mean"}


def test_info_shows_no_host_paths(server):
    def strings(obj):
        if isinstance(obj, dict):
            return [s for v in obj.values() for s in strings(v)]
        if isinstance(obj, list):
            return [s for v in obj for s in strings(v)]
        return [obj] if isinstance(obj, str) else []

    info = requests.post(f"{server.url}/info", timeout=10).json()
    assert info["exports"] == server.exports.name
    assert not [s for s in strings(info) if s.startswith("/") or str(server.exports) in s]


def test_blending_mixes_presets_and_uploads_by_weight(server):
    content = hi.png(64, 48)
    brick = image_of(stylize(server, content, style_name="wheat_field")).astype(int)
    only_brick = stylize(server, content, style_name="wheat_field,pebbles", weights="1,0")
    assert only_brick.status_code == 200, only_brick.text
    assert only_brick.headers["x-atelier-style"] == "preset:wheat_field x1, preset:pebbles x0"
    assert np.abs(image_of(only_brick).astype(int) - brick).max() <= 1
    half = stylize(server, content, style_name="wheat_field,pebbles")  # equal weights by default
    grass = image_of(stylize(server, content, style_name="pebbles")).astype(int)
    mixed = image_of(half).astype(int)
    assert np.abs(mixed - brick).mean() > 0.5 and np.abs(mixed - grass).mean() > 0.5
    with_upload = stylize(
        server, content, [hi.jpeg(80, 60), hi.png(50, 70)], style_name="chevrons", weights="0.5,0.25,0.25"
    )
    assert with_upload.status_code == 200, with_upload.text
    assert with_upload.headers["x-atelier-style"].startswith("preset:chevrons x0.5, upload")


_rng = np.random.default_rng(2026)
# Thin, odd and random sizes (aspect 1:250 .. 250:1, sides 16 .. 4000) and max_side values; and
# sides under the documented minimum of 16 px, which are refused with a 400.
SHAPES = [
    (1100, 16, 512),
    (16, 1100, 512),
    (1900, 16, 512),
    (4000, 17, 512),
    (17, 4000, 2048),
    (33, 17, 512),
    (16, 16, 512),
    (517, 301, 512),
    (1, 1000, 512),
    (1000, 1, 512),
    (15, 300, 512),
    (3, 3, 64),
]
SHAPES += [
    (int(w), int(h), int(m))
    for w, h, m in zip(_rng.integers(16, 4000, 6), _rng.integers(16, 600, 6), _rng.choice([64, 100, 333, 512], 6))
]
SHAPES += [(h, w, m) for w, h, m in SHAPES[-3:]]


@pytest.mark.parametrize("width, height, max_side", SHAPES, ids=[f"{w}x{h}@{m}" for w, h, m in SHAPES])
def test_any_decodable_shape_is_stylised_at_the_documented_size(server, width, height, max_side):
    """Padded up to what the cascade needs and cropped back: the long side min(its own, max_side),
    the aspect ratio kept (rounded); a side under 16 px is a 400 that says so; never a 5xx."""
    r = stylize(server, hi.png(width, height), style_name="wheat_field", max_side=max_side)
    if min(width, height) < 16:
        assert r.status_code == 400 and "at least 16 pixels" in r.json()["error"], r.text
        return
    assert r.status_code == 200, r.text
    scale = min(1.0, max_side / max(width, height))
    expected = (max(1, round(height * scale)), max(1, round(width * scale)), 3)
    assert image_of(r).shape == expected
    assert r.headers["X-Atelier-Size"] == f"{expected[1]}x{expected[0]}"


HOSTILE = [
    ("truncated png", dict(content=hi.truncated_png(), style_name="wheat_field"), "content", "truncated"),
    ("non-image bytes", dict(content=hi.non_image_bytes(), style_name="wheat_field"), "content", "not an image"),
    ("empty file", dict(content=hi.empty(), style_name="wheat_field"), "content", "empty"),
    ("1x1 image", dict(content=hi.one_by_one_png(), style_name="wheat_field"), "content", "at least"),
    (
        "50000x50000 header",
        dict(content=hi.huge_header_png(50000, 50000), style_name="wheat_field"),
        "content",
        "megapixels",
    ),
    ("animated png", dict(content=hi.animated_png(2), style_name="wheat_field"), "content", "animated"),
    ("animated style", dict(content=hi.png(), style=hi.animated_gif(3)), "style", "animated"),
    (
        "animation as png",
        dict(content=hi.animated_gif(3), style_name="wheat_field", format="png"),
        "format",
        "gif or webp",
    ),
    ("301 frames", dict(content=hi.long_gif(301), style_name="wheat_field"), "content", "301 frames; the limit is 300"),
    ("hostile style", dict(content=hi.png(), style=hi.huge_header_png()), "style", "megapixels"),
    ("neither style", dict(content=hi.png()), "style", "give a style"),
    ("nine styles", dict(content=hi.png(), style_name=",".join(["wheat_field"] * 9)), "style", "at most 8"),
    (
        "weights count",
        dict(content=hi.png(), style_name="wheat_field,pebbles", weights="1"),
        "weights",
        "1 weights for 2 style(s)",
    ),
    ("negative weight", dict(content=hi.png(), style_name="wheat_field,pebbles", weights="1,-1"), "weights", ">= 0"),
    ("zero weights", dict(content=hi.png(), style_name="wheat_field,pebbles", weights="0,0"), "weights", "not all 0"),
    ("weights text", dict(content=hi.png(), style_name="wheat_field,pebbles", weights="a,b"), "weights", "numbers"),
    ("unknown in blend", dict(content=hi.png(), style_name="wheat_field,vangogh"), "style_name", "unknown preset"),
    (
        "misspelt field",
        dict(content=hi.png(), style_name="wheat_field", stregnth=0.5),
        "stregnth",
        "did you mean 'strength'",
    ),
    (
        "misspelt file field",
        dict(content=hi.png(), style_name="wheat_field", extra_file=True),
        "styel",
        "unknown field",
    ),
    ("unknown preset", dict(content=hi.png(), style_name="vangogh"), "style_name", "unknown preset"),
    ("path-like preset", dict(content=hi.png(), style_name="../x"), "style_name", "unknown preset"),
    ("absolute path preset", dict(content=hi.png(), style_name="/etc/passwd"), "style_name", "unknown preset"),
    ("strength 1.5", dict(content=hi.png(), style_name="wheat_field", strength=1.5), "strength", "less than or equal"),
    ("strength -0.1", dict(content=hi.png(), style_name="wheat_field", strength=-0.1), "strength", "greater than"),
    ("strength text", dict(content=hi.png(), style_name="wheat_field", strength="lots"), "strength", "number"),
    (
        "max_side 10^6",
        dict(content=hi.png(), style_name="wheat_field", max_side=10**6),
        "max_side",
        "less than or equal",
    ),
    ("max_side 10", dict(content=hi.png(), style_name="wheat_field", max_side=10), "max_side", "greater than"),
    ("format bmp", dict(content=hi.png(), style_name="wheat_field", format="bmp"), "format", "png"),
    ("no content", dict(content=None, style_name="wheat_field"), "content", ""),
]


@pytest.mark.parametrize("name, request_fields, field, needle", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_a_4xx_naming_the_problem(server, name, request_fields, field, needle):
    r = stylize(server, **request_fields)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text}"
    body = r.json()
    assert field in [loc for d in body["detail"] for loc in d["loc"]], body
    assert needle.lower() in json.dumps(body).lower(), body
    assert server.ready()
    assert stylize(server, hi.png(), style_name="wheat_field").status_code == 200  # and it still serves


def test_oversized_upload_is_refused_before_decoding(server):
    big = hi.png(64, 48) + b"\0" * (21 * 1024 * 1024)  # a valid PNG followed by 21 MB of padding
    r = stylize(server, big, style_name="wheat_field")
    assert r.status_code in (400, 413), r.text
    assert "limit" in r.json()["error"]
    too_big = requests.post(
        f"{server.url}/stylize",
        data=b"\0" * (42 * 1024 * 1024),
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=60,
    )
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    assert server.ready()


@pytest.mark.parametrize("how", ["multipart text part", "url-encoded form"])
def test_a_url_or_text_in_a_file_field_is_a_400_and_nothing_is_fetched(server, how):
    """BentoML takes text in a file field for a URL and downloads it (no size limit, from the
    service's network): the service refuses it before that."""
    url = f"{server.url}/info"  # reachable from the service: a fetch would succeed
    if how == "url-encoded form":
        r = requests.post(f"{server.url}/stylize", data={"content": url, "style_name": "wheat_field"}, timeout=30)
    else:
        r = requests.post(
            f"{server.url}/stylize", files=[("content", (None, url))], data={"style_name": "wheat_field"}, timeout=30
        )
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"] == ["content"] and "must be an uploaded file" in r.json()["error"]
    assert "method=GET,path=/info" not in server.log_tail(2000)  # the service never fetched the URL
