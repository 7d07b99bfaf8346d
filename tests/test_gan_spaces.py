"""The GAN's two evaluation spaces: the independent one shares only the images with FID-LeNet (its
own split, its own architecture reading the centre of the image), its distances are the same
whether computed in one block or many, and both spaces reach the manifest and the service's info."""

from __future__ import annotations

import json

import numpy as np
import requests
import torch

from training.gan import metrics
from training.gan.data import load_dataset
from training.gan.metrics import ResidualJudge, ball_coverage, knn_radii
from training.gan.options import JUDGE_SPLIT_SEED


def test_the_independent_split_holds_out_other_digits_of_the_same_images():
    split = load_dataset("mnist", 32, 1)
    other = split.resplit(JUDGE_SPLIT_SEED)
    assert (len(other.train), len(other.held_out)) == (4500, 500)
    assert np.bincount(other.held_out.labels.numpy()).tolist() == [50] * 10  # stratified, as the first
    shared = np.intersect1d(split.held_out_index, other.held_out_index)
    assert len(shared) < 100  # a tenth of the 500 by chance, not the same images

    # every row of the dataset once, with its own label, whichever split it is in
    def whole(s):
        order = np.argsort(np.concatenate([s.train_index, s.held_out_index]))
        return torch.cat([s.train.images, s.held_out.images])[order], torch.cat([s.train.labels, s.held_out.labels])[
            order
        ]

    (images, labels), (images_again, labels_again) = whole(split), whole(other)
    assert torch.equal(images, images_again) and torch.equal(labels, labels_again)


def test_the_judge_reads_the_centre_of_the_image_only():
    judge = ResidualJudge(1, 32, 10).eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    border, centre = x.clone(), x.clone()
    border[..., :2, :] = border[..., -2:, :] = -1.0  # outside the centre 28 x 28
    border[..., :, :2] = 1.0
    centre[..., 15, 15] += 0.5
    with torch.no_grad():
        assert judge.features(x).shape == (3, 64)
        assert torch.equal(judge.features(border), judge.features(x))
        assert not torch.equal(judge.features(centre), judge.features(x))


def test_distances_in_blocks_equal_those_in_one(monkeypatch):
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((300, 8)), rng.standard_normal((70, 8)) + 0.3
    whole_radii, whole_cover = knn_radii(real), ball_coverage(real, knn_radii(real), fake)
    monkeypatch.setattr(metrics, "PAIRWISE_BLOCK", 1000)  # 3 rows of 300 at a time
    np.testing.assert_allclose(knn_radii(real), whole_radii, rtol=1e-12)
    assert ball_coverage(real, whole_radii, fake) == whole_cover and 0 < whole_cover < 1


def test_both_spaces_reach_the_manifest_and_the_services_info(exports_dir, server, tiny_gan_run):
    run_metrics = json.loads((tiny_gan_run / "metrics.json").read_text())
    entry = json.loads((exports_dir / "manifest.json").read_text())["models"]["generator"]
    assert entry["metrics"]["independent"] == run_metrics["independent"]
    r = requests.post(f"{server.url}/info", timeout=10)
    assert r.status_code == 200
    shown = r.json()["models"]["generator"]["metrics"]
    for space in (shown, shown["independent"]):
        assert space["fid_vs_baseline"] > 0 and 0 <= space["recall"] <= 1 and "feature_space" in space
    assert shown["independent"]["feature_space"].startswith("independent: residual CNN")
