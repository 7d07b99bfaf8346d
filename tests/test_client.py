"""The Python client and its command line against a real `bentoml serve`."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image, ImageSequence

from atelier_client import Atelier, AtelierError
from bench import hostile_images as hi
from bench.pipeline import REPO, Server, run_fresh
from tests.helpers import SLOW, in_background, post_stylize, queue_state, wait_until


@pytest.fixture()
def atelier(server):
    with Atelier(server.url, timeout=60) as client:
        yield client


def api_images(server, **payload) -> list[np.ndarray]:
    body = requests.post(f"{server.url}/sample", json=payload, timeout=60).json()
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in body["images"]]


def test_sample_returns_the_apis_images_with_their_seeds(atelier, server):
    images = atelier.sample(n=3, seed=41, label=2)
    assert [im.info["seed"] for im in images] == [41, 42, 43] and {im.info["label"] for im in images} == {2}
    for got, expected in zip(images, api_images(server, n=3, seed=41, label=2)):
        np.testing.assert_array_equal(np.asarray(got), expected)
    grid = atelier.sample_grid(n=4, seed=7)
    api_grid = requests.post(f"{server.url}/sample_grid", json={"n": 4, "seed": 7}, timeout=60).content
    assert grid.info["seed"] == 7
    np.testing.assert_array_equal(np.asarray(grid), np.asarray(Image.open(io.BytesIO(api_grid))))
    walk = atelier.interpolate(3, 9, steps=5)
    assert len(walk) == 5
    np.testing.assert_array_equal(np.asarray(atelier.sample(n=1, seed=3, label=0)[0]), np.asarray(walk[0]))


def test_stylize_with_presets_uploads_and_blends(atelier, tmp_path):
    content = tmp_path / "photo.png"
    Image.fromarray(hi.gradient(96, 64)).save(content)
    preset = atelier.stylize(content, style_name="wheat_field")
    assert preset.size == (96, 64) and preset.info["style"] == "preset:wheat_field"
    style_image = Image.fromarray(hi.gradient(40, 40)[:, ::-1])
    blended = atelier.stylize(
        content.read_bytes(),
        style=style_image,
        style_name=["wheat_field", "pebbles"],
        weights=[2, 1, 1],
        max_side=64,
        format="jpeg",
    )
    assert blended.size == (64, 43) and blended.format == "JPEG"
    assert blended.info["style"].startswith("preset:wheat_field x0.5, preset:pebbles x0.25, upload")
    presets = {p.name: p for p in atelier.styles()}
    assert {"wheat_field", "pebbles"} <= set(presets) and "van Gogh" in presets["wheat_field"].credit
    assert presets["wheat_field"].thumbnail_image().format == "JPEG"
    info, api = atelier.info(), requests.post(f"{atelier.url}/info", json={}, timeout=30).json()
    assert info.models["stylizer"].sha256 == api["models"]["stylizer"]["sha256"]
    assert info.models["stylizer"].provider == api["models"]["stylizer"]["provider"] and info.version == api["version"]


@pytest.mark.parametrize(
    "call, status, field, words",
    [
        (lambda a: a.sample(label=99), 400, "label", "must be in 0..3"),
        (lambda a: a.sample(n=0), 400, "n", "greater than or equal to 1"),
        (lambda a: a.stylize(hi.png(), style_name="nope"), 400, "style_name", "unknown preset 'nope'"),
        (lambda a: a.stylize(hi.truncated_png(), style_name="wheat_field"), 400, "content", "truncated"),
    ],
)
def test_api_errors_arrive_as_one_exception_with_field_and_message(atelier, call, status, field, words):
    with pytest.raises(AtelierError) as refused:
        call(atelier)
    assert (refused.value.status, refused.value.field) == (status, field)
    assert words in refused.value.message


def test_an_unreachable_service_is_an_error_not_a_hang(free_url):
    with Atelier(free_url, timeout=2, retries=1) as client, pytest.raises(AtelierError, match="cannot reach"):
        client.info()


@pytest.fixture()
def free_url():
    from bench.pipeline import free_port

    return f"http://127.0.0.1:{free_port()}"


def test_a_busy_service_is_retried_after_what_retry_after_says(exports_dir, tmp_path):
    with Server(exports_dir, tmp_path / "serve.log", env={"ATELIER_QUEUE_SECONDS": "0"}) as server:
        slow = in_background(post_stylize, server, SLOW, max_side=1024)
        wait_until(lambda: queue_state(server)["running"] == 1, 30, "the slow stylisation running")
        started = time.monotonic()
        with Atelier(server.url, retries=10, max_retry_wait=2) as client:
            image = client.stylize(hi.png(64, 48), style_name="wheat_field")
        assert image.size == (64, 48)
        assert queue_state(server)["refused"] >= 1 and time.monotonic() - started >= 1  # refused, waited, served
        assert slow["done"].wait(60) and slow["result"].status_code == 200
        with Atelier(server.url, retries=0) as client:  # without retries the 429 is the caller's
            slow = in_background(post_stylize, server, SLOW, max_side=1024)
            wait_until(lambda: queue_state(server)["running"] == 1, 30, "the slow stylisation running")
            with pytest.raises(AtelierError) as busy:
                client.stylize(hi.png(64, 48), style_name="wheat_field")
            assert busy.value.status == 429 and busy.value.retry_after >= 1 and "busy" in busy.value.message
            slow["done"].wait(60)


def cli(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atelier_client", "--url", server.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_the_command_line(server, atelier, tmp_path):
    grid = tmp_path / "grid.png"
    done = cli(server, "sample", "--n", "4", "--seed", "3", "-o", str(grid))
    assert done.returncode == 0, done.stderr
    assert "seed 3" in done.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(grid)), np.asarray(atelier.sample_grid(n=4, seed=3)))

    photo = tmp_path / "photo.jpg"
    Image.fromarray(hi.gradient(128, 80)).save(photo)
    out = tmp_path / "painted.webp"
    done = cli(server, "stylize", str(photo), "--style", "wheat_field", "--max-side", "64", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (64, 40) and Image.open(out).format == "WEBP"

    clip = tmp_path / "clip.gif"  # an animation in, an animation out: frames and their durations kept
    clip.write_bytes(hi.panning_gif(64, 40, [70, 80, 90], step=8))
    painted_clip = tmp_path / "painted.gif"
    done = cli(server, "stylize", str(clip), "--style", "wheat_field", "-o", str(painted_clip))
    assert done.returncode == 0, done.stderr
    with Image.open(painted_clip) as result:
        assert result.n_frames == 3 and result.size == (64, 40)
        assert [frame.info["duration"] for frame in ImageSequence.Iterator(result)] == [70, 80, 90]
    painted = atelier.sample(n=2, seed=4, style_name="wheat_field", strength=0.5)
    assert [im.size for im in painted] == [(256, 256)] * 2 and painted[0].info["seed"] == 4
    assert painted[0].info["style"] == "preset:wheat_field"
    painted_grid = tmp_path / "painted-grid.png"  # samples painted in an uploaded image's style
    done = cli(server, "sample", "--n", "2", "--seed", "4", "--style-image", str(photo), "-o", str(painted_grid))
    assert done.returncode == 0 and "seed 4, upload" in done.stdout, done.stderr
    np.testing.assert_array_equal(
        np.asarray(Image.open(painted_grid)), np.asarray(atelier.sample_grid(n=2, seed=4, style=photo))
    )

    walk = tmp_path / "walk.gif"
    assert cli(server, "interpolate", "1", "2", "--steps", "4", "-o", str(walk)).returncode == 0
    assert Image.open(walk).n_frames == 6  # there and back: 4 + 2

    refused = cli(server, "stylize", str(photo), "--style", "nope", "-o", str(tmp_path / "x.png"))
    assert refused.returncode == 1 and "style_name: unknown preset 'nope'" in refused.stderr
    assert not (tmp_path / "x.png").exists()
    listed = cli(server, "styles")
    assert listed.returncode == 0 and "wheat_field" in listed.stdout
    assert "usage" in cli(server, "--help").stdout


def test_the_client_imports_neither_torch_nor_bentoml():
    code = "import sys, atelier_client, atelier_client.__main__; print(sorted({'torch', 'bentoml'} & set(sys.modules)))"
    done = run_fresh(code, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_the_client_installs_and_runs_outside_the_checkout(server, tmp_path):
    """Its own package metadata: a fresh virtual environment, the client's folder copied out of the
    checkout (nothing of Atelier on the path), `pip install` from the package index's httpx and Pillow."""
    source = tmp_path / "src" / "atelier_client"
    shutil.copytree(
        REPO / "atelier_client", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(source)], capture_output=True, text=True, env=env, timeout=600
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(venv / "bin" / "atelier"), "--url", server.url, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert "wheat_field" in run("styles").stdout
    assert run("--version").stdout.startswith("atelier-client ")
    check = "import atelier_client, sys; print(atelier_client.__file__, 'service' in sys.modules)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert str(venv) in where.stdout and where.stdout.split()[1] == "False", where.stdout + where.stderr
