"""GAN endpoints against a real `bentoml serve` process on loopback, serving the tiny exported model."""

import base64
import io
import json
import re

import numpy as np
import pytest
import requests
from PIL import Image

from service.runtime import cuda_problem
from tests.helpers import post

MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_same_seed_same_images_and_seed_echoed(server):
    a = post(server, "sample", {"n": 3, "seed": 1234})
    b = post(server, "sample", {"n": 3, "seed": 1234})
    assert a.status_code == b.status_code == 200
    assert a.json()["images"] == b.json()["images"]
    body = a.json()
    assert body["seed"] == 1234 and body["seeds"] == [1234, 1235, 1236]
    assert (body["width"], body["height"]) == (32, 32) and body["model"].startswith("generator@")
    # a seed's image does not depend on its batch: seed 1235 alone equals image 1 of the first call
    labelled = post(server, "sample", {"n": 3, "seed": 1234, "label": 2}).json()["images"]
    assert post(server, "sample", {"n": 1, "seed": 1235, "label": 2}).json()["images"][0] == labelled[1]
    assert post(server, "sample", {"n": 3, "seed": 99}).json()["images"] != body["images"]


def test_random_seed_is_a_uint32_and_reproduces(server):
    first = post(server, "sample", {"n": 2}).json()
    assert 0 <= first["seed"] < 2**32
    again = post(server, "sample", {"n": 2, "seed": first["seed"]}).json()
    assert again["images"] == first["images"]


def test_images_equal_the_training_grid(server, tiny_gan_run):
    """Seed s with label r is the training grid's row r, column s (same seeds, same latents)."""
    grid = np.asarray(Image.open(tiny_gan_run / "grid.png"))
    for label in range(4):
        images = post(server, "sample", {"n": 10, "seed": 0, "label": label}).json()["images"]
        for col, b64 in enumerate(images):
            tile = grid[label * 34 : label * 34 + 32, col * 34 : col * 34 + 32]
            diff = np.abs(decode(b64).astype(int) - tile.astype(int))
            assert diff.max() <= 1, f"label {label} seed {col}"  # ONNX Runtime vs PyTorch rounding


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_every_format(server, fmt):
    body = post(server, "sample", {"n": 2, "seed": 7, "format": fmt}).json()
    assert body["format"] == fmt
    for b64 in body["images"]:
        data = base64.b64decode(b64)
        assert data.startswith(MAGIC[fmt])
        assert Image.open(io.BytesIO(data)).size == (32, 32)
    grid = post(server, "sample_grid", {"n": 4, "seed": 7, "format": fmt})
    assert grid.status_code == 200 and grid.content.startswith(MAGIC[fmt])
    assert grid.headers["content-type"] == f"image/{fmt}"


def test_grid_tiles_the_samples(server):
    r = post(server, "sample_grid", {"n": 6, "seed": 42})
    assert r.status_code == 200 and r.headers["x-atelier-seed"] == "42"
    grid = np.asarray(Image.open(io.BytesIO(r.content)))
    assert grid.shape[:2] == (2 * 32 + 2, 3 * 32 + 2 * 2)  # 6 -> 3 columns x 2 rows, 2 px gaps
    samples = post(server, "sample", {"n": 6, "seed": 42}).json()["images"]
    assert np.array_equal(grid[34:66, 0:32], decode(samples[3]))


def test_truncation_and_labels_change_images(server):
    base = post(server, "sample", {"n": 1, "seed": 5, "label": 1}).json()
    truncated = post(server, "sample", {"n": 1, "seed": 5, "label": 1, "truncation": 0.3}).json()
    other = post(server, "sample", {"n": 1, "seed": 5, "label": 2}).json()
    assert base["labels"] == [1] and other["labels"] == [2]
    assert len({base["images"][0], truncated["images"][0], other["images"][0]}) == 3
    cycled = post(server, "sample", {"n": 6, "seed": 5}).json()
    assert cycled["labels"] == [0, 1, 2, 3, 0, 1]  # no label: classes cycle


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_interpolation_ends_at_both_seeds(server, method):
    body = post(server, "interpolate", {"seed_a": 3, "seed_b": 9, "steps": 5, "method": method, "label": 2}).json()
    assert body["steps"] == 5 and len(body["images"]) == 5 and body["method"] == method
    a = post(server, "sample", {"n": 1, "seed": 3, "label": 2}).json()["images"][0]
    b = post(server, "sample", {"n": 1, "seed": 9, "label": 2}).json()["images"][0]
    assert np.abs(decode(body["images"][0]).astype(int) - decode(a)).max() <= 1
    assert np.abs(decode(body["images"][-1]).astype(int) - decode(b)).max() <= 1
    assert body["images"][2] not in (a, b)


def test_info_reports_models_and_the_provider_in_use(server, exports_dir, manifest):
    r = requests.post(f"{server.url}/info", timeout=10)
    assert r.status_code == 200
    info = r.json()
    g = info["models"]["generator"]
    assert g["sha256"] == manifest["models"]["generator"]["sha256"]
    assert g["provider"] == ("CPUExecutionProvider" if cuda_problem() else "CUDAExecutionProvider")  # what runs here
    assert g["class_labels"] == ["class0", "class1", "class2", "class3"]
    assert info["version"] and info["device"]


def test_health_and_metrics(server):
    assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    post(server, "sample", {"n": 1, "seed": 1})
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    counted = re.findall(
        r'^bentoml_service_request_total\{(?=[^}]*endpoint="/sample")'
        r'(?=[^}]*http_response_code="200")[^}]*\} ([0-9.e+]+)$',
        metrics,
        re.MULTILINE,
    )
    assert counted and float(counted[0]) >= 1, metrics[-1500:]


BAD_REQUESTS = [
    ("sample", {"n": 0}, "n"),
    ("sample", {"n": 10**6}, "n"),
    ("sample", {"seed": -1}, "seed"),
    ("sample", {"seed": 2**32}, "seed"),
    ("sample", {"truncation": 0}, "truncation"),
    ("sample", {"truncation": 1.5}, "truncation"),
    ("sample", {"label": 4}, "label"),
    ("sample", {"label": -1}, "label"),
    ("sample", {"format": "bmp"}, "format"),
    ("sample", {"n": "many"}, "n"),
    ("sample", {"n": 2.5}, "n"),
    ("sample", {"seed": "12"}, "seed"),
    ("sample", {"n": True}, "n"),
    ("sample_grid", {"n": 65}, "n"),
    ("interpolate", {"seed_a": 1}, "seed_b"),
    ("interpolate", {"seed_a": 1, "seed_b": 2, "steps": 1}, "steps"),
    ("interpolate", {"seed_a": 1, "seed_b": 2, "steps": 65}, "steps"),
    ("interpolate", {"seed_a": 1, "seed_b": 2, "method": "cubic"}, "method"),
    ("sample", {"n": 1, "sed": 5}, "sed"),
    ("sample", {"seed": 5, "labl": 3}, "labl"),
    ("interpolate", {"seed_a": 1, "seed_b": 2, "step": 4}, "step"),
    ("info", {"verbose": True}, "verbose"),
]


def test_an_unknown_field_names_the_closest_and_every_accepted_one(server):
    r = post(server, "sample", {"n": 1, "sed": 5})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "unknown field 'sed'" in error and "did you mean 'seed'?" in error
    assert "accepted fields: n, seed, truncation, label, style_name, style, weights, strength, format" in error
    assert requests.post(f"{server.url}/info", timeout=10).status_code == 200  # an empty body is fine there
    assert post(server, "info", {}).status_code == 200


@pytest.mark.parametrize("endpoint, payload, field", BAD_REQUESTS)
def test_bad_input_is_a_4xx_naming_the_field(server, endpoint, payload, field):
    r = post(server, endpoint, payload)
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert field in [loc for d in body["detail"] for loc in d["loc"]], body
    assert body["error"]
    assert server.ready()


@pytest.mark.parametrize(
    "data, status, needle",
    [
        (b'{"n": 2', 400, "json"),
        (b"", 400, "empty"),
        (b"   ", 400, "empty"),
        (b"[1, 2]", 400, "object"),
        (b"\xff\xfe\x00garbage", 400, ""),
        (b'{"n": "' + b"x" * 70_000 + b'"}', 413, "limit"),
    ],
)
def test_malformed_bodies_are_4xx(server, data, status, needle):
    r = requests.post(f"{server.url}/sample", data=data, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"].lower() + json.dumps(r.json()["detail"]).lower()
    assert server.ready()
    assert post(server, "sample", {"n": 1, "seed": 1}).status_code == 200
