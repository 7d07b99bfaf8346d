"""Reconstruction-decoder trainer (training/style/train.py), data (data.py) and export (export.py).

Tiny real runs: random VGG weights (tests only), 32 px crops, batch 2, a few steps on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.pipeline import TINY_STYLE_ARGS
from training.runs import load_checkpoint
from training.style import train
from training.style.data import TrainingImages, content_source, is_grey, recolour, rotate_hue
from training.style.presets import preset_name
from training.vgg import VGGMismatchError, check_same_vgg

# The shared tiny settings; every run here gives its own --steps (the last one given wins).
TINY = [*TINY_STYLE_ARGS, "--log-every", "1", "--seed", "3"]


def _run(root: Path, name: str, *extra: str) -> Path:
    assert train.main([*TINY, "--runs-root", str(root), "--name", name, *extra], log=lambda s: None) == 0
    return root / "style" / name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("runs"), "tiny", "--steps", "4", "--sample-every", "2")


def test_a_few_steps_write_the_run_folder(tiny_run):
    for name in (
        "options.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "samples.png",
        "losses.png",
        "samples/step_000002.png",
        "samples/step_000004.png",
    ):
        assert (tiny_run / name).is_file(), name
    options = json.loads((tiny_run / "options.json").read_text())
    assert options["steps"] == 4 and options["vgg_info"]["random_weights"] is True
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    keys = ("loss", "steps_per_s", *(f"{k}_relu{b}_1" for k in ("pixel", "feature", "psnr") for b in (1, 2, 3)))
    assert all(np.isfinite(r[k]) for r in records for k in keys)
    ckpt = load_checkpoint(tiny_run / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["vgg"]["source"] == "random"
    assert set(ckpt) >= {"decoders", "optimizer", "rng", "options", "train_seconds"}
    assert ckpt["decoder_config"]["levels"] == ["relu3_1", "relu2_1", "relu1_1"]
    assert ckpt["decoder_config"]["pointwise_entry"] == ["relu1_1"]  # the level the transform folds into


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_run):
    part = _run(tmp_path, "part", "--steps", "2")
    assert train.main(["--resume", str(part), "--steps", "4"], log=lambda s: None) == 0
    whole = load_checkpoint(tiny_run / "checkpoint.pt")["decoders"]
    resumed = load_checkpoint(part / "checkpoint.pt")
    assert resumed["step"] == 4
    assert all(torch.equal(whole[k], resumed["decoders"][k]) for k in whole)
    steps = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_refuses_changed_training_options(tmp_path, tiny_run, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", str(tiny_run), "--steps", "6", "--lr", "0.1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--lr 0.1 differs from the run's" in err and "it may change --steps, --device" in err


def test_vgg_mismatch_is_refused():
    info = {"source": "hed-vgg16", "arch": "vgg16", "weights_sha256": "a", "last_layer": "relu3_1", "normalization": {}}
    check_same_vgg(info, dict(info))
    with pytest.raises(VGGMismatchError, match="weights_sha256"):
        check_same_vgg(info, {**info, "weights_sha256": "b"})


def test_dry_run_prints_options_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    assert train.main(["--dry-run", "--runs-root", str(root), "--profile", "full"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["encoder_layer"] == "relu4_1" and printed["steps"] == 30000
    assert not root.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crop", "10"], "--crop"),
        (["--steps", "0"], "--steps"),
        (["--encoder-layer", "relu9_1"], "--encoder-layer"),
        (["--lr", "-1"], "--lr"),
        (["--decoder-width", "0"], "--decoder-width"),
        (["--fine-width", "3"], "--fine-width"),
        (["--content-dir", "/no/such/folder"], "--content-dir"),
        (["--vgg", "/no/such/file.pth"], "--vgg"),
        (["--profile", "tiny"], "--profile"),
    ],
)
def test_invalid_options_exit_before_work(tmp_path, capsys, args, message):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        train.main([*args, "--runs-root", str(root)])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not root.exists()


def test_data_stream_is_a_function_of_seed_and_step():
    images = TrainingImages(content_source(None), crop=32, batch_size=2, seed=7)
    a, b = images[5], images[5]
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(images[6], a)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_hue_rotation_keeps_luma_and_turns_red_into_the_other_primaries():
    red = torch.zeros(3, 4, 4)
    red[0] = 0.6
    luma = torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close(rotate_hue(red, 0.0), red)
    thirds = [rotate_hue(red, k * 2 * np.pi / 3) for k in (1, 2)]
    for turned in thirds:
        torch.testing.assert_close(torch.einsum("c,chw->hw", luma, turned), torch.einsum("c,chw->hw", luma, red))
    assert {int(t[:, 0, 0].argmax()) for t in thirds} == {1, 2}  # a third of the way round: green, blue


def test_recolouring_turns_a_grey_picture_into_every_hue():
    """The training data's 7 grey pictures must teach colour: augmented crops of a grey image
    come out coloured, with mean hues in every sixth of the circle."""
    import colorsys

    grey = torch.linspace(0, 1, 32 * 32).reshape(1, 32, 32).expand(3, 32, 32).clone()
    assert is_grey(grey)
    sextants, coloured = set(), 0
    for step in range(120):
        out = recolour(grey, np.random.default_rng([0, step]))
        r, g, b = (float(c) for c in out.mean(dim=(1, 2)))
        h, _, sat = colorsys.rgb_to_hsv(r, g, b)
        coloured += (out.max(0).values - out.min(0).values).mean() > 0.1
        if sat > 0.1:
            sextants.add(int(h * 6) % 6)
    assert sextants == set(range(6))
    assert coloured > 60


def test_folder_sources_and_preset_names(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    for rel in ("A Style!.png", "sub/a-style.jpg", "sub/b.webp", "notes.txt"):
        path = tmp_path / rel
        if rel.endswith(".txt"):
            path.write_text("x")
        else:
            Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(path)
    source = content_source(tmp_path)
    assert source.names == ("A Style!.png", "sub/a-style.jpg", "sub/b.webp")
    assert source.get(1).shape == (20, 30, 3)
    taken: set[str] = set()
    for stem, expected in [("A Style!", "a_style"), ("a-style", "a-style"), ("a_style", "a_style-2"), ("...", "style")]:
        assert preset_name(stem, taken) == expected
        taken.add(expected)


def test_export_refuses_a_different_vgg(tmp_path, tiny_run):
    from training.runs import save_checkpoint
    from training.style.export import export_style

    run = tmp_path / "tampered"
    run.mkdir()
    ckpt = load_checkpoint(tiny_run / "checkpoint.pt")
    ckpt["vgg"] = {**ckpt["vgg"], "weights_sha256": "0" * 64}
    save_checkpoint(run / "checkpoint.pt", ckpt)
    with pytest.raises(VGGMismatchError, match="weights_sha256"):
        export_style(run, tmp_path / "out", None, log=lambda s: None)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    """The tiny run exported with relu3_1 and relu1_1 and a styles folder: (folder, models, assets, style)."""
    from PIL import Image

    from training.style.export import export_style

    styles = tmp_path_factory.mktemp("my styles")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(styles / "Chevrons.png")
    out = tmp_path_factory.mktemp("exports")
    models, assets, style = export_style(
        tiny_run, out, styles, log=lambda s: None, style_side=96, transform="wct", levels=["relu1_1", "relu3_1"]
    )
    return out, models, assets, style


def test_export_style_writes_its_manifest_entries_and_presets(exported):
    from training.style.swap import DEFAULT_PATCHES

    out, models, assets, style = exported
    assert style.levels == ["relu3_1", "relu1_1"] and style.size_multiple == 4  # coarse to fine
    assert style.transform == "wct" and style.feature_channels == {"relu3_1": 256, "relu1_1": 64}
    assert style.vgg.random_weights is True
    assert style.style_image_side == 96 and style.training["steps"] == 4
    psnr = style.quality.reconstruction_psnr_db
    assert set(psnr) == {"relu3_1", "relu1_1"} and set(psnr["relu3_1"]) == {"china", "flower", "grace_hopper", "mean"}
    assert {m.path for m in models.values()} == {"style_encoder.onnx", "stylizer.onnx"}
    assert all(m.parity.max_abs_diff <= m.parity.atol for m in models.values())
    assert models["stylizer"].transform_parity.max_rel_err <= models["stylizer"].transform_parity.rtol
    names = [p.name for p in style.presets]
    assert "chevrons" in names and "chevrons-2" in names
    mine = next(p for p in style.presets if p.name == "chevrons-2")
    assert (mine.source, mine.thumbnail, mine.credit) == ("file:Chevrons.png", "presets/chevrons-2.jpg", None)
    credited = {p.name: p.credit or "" for p in style.presets}
    assert "van Gogh" in credited["wheat_field"] and "patterns.py" in credited["chevrons"]
    for rel in assets:
        assert (out / rel).is_file(), rel
    # the whole cascade runs at full size (relu3_1 has no pyramid): the patches go in there, in cells of 4 px
    patches = style.patches
    assert patches.input == "style" and patches.scale == 1 and patches.cell == 4
    assert patches.prior == DEFAULT_PATCHES.prior and patches.detail_gain == DEFAULT_PATCHES.detail_gain
    with np.load(out / "style_presets.npz") as npz:
        for name in names:
            assert npz[f"{name}__relu3_1__mean"].shape == (256,)
            assert npz[f"{name}__relu3_1__cov"].shape == (256, 256)
            assert npz[f"{name}__relu1_1__cov"].dtype == np.float32
            picture = npz[f"{name}__style"]
            assert picture.dtype == np.uint8 and max(picture.shape[:2]) <= 96 and picture.shape[2] == 3
            assert picture.shape[0] % 4 == 0 and picture.shape[1] % 4 == 0


def test_both_exported_style_graphs_match_the_torch_modules_on_other_shapes(exported, tiny_run):
    import onnxruntime as ort

    from training.style.export import load_decoders
    from training.style.model import Cascade, StyleEncoder
    from training.style.swap import DEFAULT_PATCHES, StyleSwapCascade
    from training.vgg import load_vgg

    out = exported[0]
    enc = ort.InferenceSession(str(out / "style_encoder.onnx"), providers=["CPUExecutionProvider"])
    sty = ort.InferenceSession(str(out / "stylizer.onnx"), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 44, 68, generator=torch.Generator().manual_seed(0))
    style_img = torch.rand(1, 3, 36, 52, generator=torch.Generator().manual_seed(1))
    vgg, _ = load_vgg("random", last_layer="relu3_1", log=lambda s: None)
    levels = ["relu3_1", "relu1_1"]
    decoders = load_decoders(load_checkpoint(tiny_run / "checkpoint.pt"), levels)
    with torch.no_grad():
        stats = StyleEncoder(vgg, levels)(style_img)
        cascade = Cascade(vgg, decoders, "wct")
        expected = StyleSwapCascade(cascade, DEFAULT_PATCHES)(image, torch.tensor([0.7]), style_img, *stats)
        statistics_only = cascade(image, torch.tensor([0.7]), *stats)
    assert float((expected - statistics_only).abs().max()) > 0.01  # the patches are in the graph
    got_stats = enc.run(None, {"image": style_img.numpy()})
    feed = {"content": image.numpy(), "strength": np.array([0.7], np.float32), "style": style_img.numpy()}
    feed.update(
        {f"{k}_{lv}": got_stats[2 * i + j] for i, lv in enumerate(levels) for j, k in enumerate(("mean", "cov"))}
    )
    got = sty.run(["image"], feed)[0]
    assert got.shape == (1, 3, 44, 68)
    for g, e in zip(got_stats, stats):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-4 * float(e.abs().max()))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-3)


def test_without_patches_the_stylizer_is_the_statistics_cascade_alone(tmp_path, tiny_run):
    """``--style-patch-scale 0``: no ``style`` input, and the presets have no picture."""
    from training.style.export import export_style

    models, _, style = export_style(tiny_run, tmp_path / "plain", None, log=lambda s: None, style_side=96, patches=None)
    assert style.patches is None and style.cell == 0
    assert "style" not in {i.name for i in models["stylizer"].inputs}
    with np.load(tmp_path / "plain" / "style_presets.npz") as npz:
        assert not any(key.endswith("__style") for key in npz.files)


def test_a_run_of_the_earlier_adain_trainer_is_refused_clearly(tmp_path, tiny_run, capsys):
    from training.runs import save_checkpoint
    from training.style.export import export_style

    run = tmp_path / "adain"
    run.mkdir()
    ckpt = load_checkpoint(tiny_run / "checkpoint.pt")
    ckpt["decoder"] = ckpt.pop("decoders")  # what the AdaIN trainer wrote
    save_checkpoint(run / "checkpoint.pt", ckpt)
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", str(run), "--steps", "6"])
    assert e.value.code == 2 and "earlier AdaIN trainer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="earlier AdaIN trainer"):
        export_style(run, tmp_path / "out", None, log=lambda s: None)
