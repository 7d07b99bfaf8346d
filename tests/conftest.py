"""Session fixtures: a tiny trained and exported model, served by a real `bentoml serve` process."""

from __future__ import annotations

import os

import pytest

from tests.pipeline import Server, export, train_tiny_gan

os.environ["BENTOML_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def tiny_gan_run(tmp_path_factory):
    return train_tiny_gan(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def exports_dir(tmp_path_factory, tiny_gan_run):
    return export(tmp_path_factory.mktemp("exports"), gan_run=tiny_gan_run)


@pytest.fixture(scope="session")
def server(exports_dir, tmp_path_factory):
    with Server(exports_dir, tmp_path_factory.mktemp("server") / "serve.log") as s:
        yield s
