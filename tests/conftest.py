"""Session fixtures: a tiny trained and exported model, served by a real `bentoml serve` process."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from bench.hostile_images import gradient
from bench.pipeline import Server, build_bento, export, train_tiny_gan, train_tiny_style

os.environ["BENTOML_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def tiny_gan_run(tmp_path_factory):
    return train_tiny_gan(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def tiny_style_run(tmp_path_factory):
    return train_tiny_style(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def user_styles(tmp_path_factory):
    """A user's styles folder: one image in a sub-folder, with a name that needs cleaning."""
    folder = tmp_path_factory.mktemp("styles")
    (folder / "mine").mkdir()
    Image.fromarray(gradient(48, 40)).save(folder / "mine" / "My Style.png")
    return folder


@pytest.fixture(scope="session")
def exports_dir(tmp_path_factory, tiny_gan_run, tiny_style_run, user_styles):
    return export(tmp_path_factory.mktemp("exports"), tiny_gan_run, tiny_style_run, user_styles)


@pytest.fixture(scope="session")
def server(exports_dir, tmp_path_factory):
    with Server(exports_dir, tmp_path_factory.mktemp("server") / "serve.log") as s:
        yield s


@pytest.fixture(scope="session")
def bento(exports_dir, tmp_path_factory):
    """The bento `bentoml build` makes of the service and the tiny export (offline), built once."""
    return build_bento(exports_dir, tmp_path_factory.mktemp("bento"))


@pytest.fixture
def manifest(exports_dir) -> dict:
    """The tiny export's manifest, a fresh copy for each test (some change it to tamper with the export)."""
    return json.loads((exports_dir / "manifest.json").read_text())
