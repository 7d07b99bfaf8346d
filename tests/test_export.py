"""Export: ONNX parity with PyTorch, the manifest contract, checksums, atomic writes."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from bench.pipeline import run_fresh
from service.manifest import ManifestError, load_manifest, read_manifest, sha256_file
from service.sampling import latents_for_seeds
from training.gan.train import build_models
from training.onnx_export import ParityError, export_checked
from training.runs import load_checkpoint


def test_generator_matches_pytorch_on_fixed_seeds(exports_dir, manifest, tiny_gan_run):
    entry = manifest["models"]["generator"]
    assert entry["parity"]["max_abs_diff"] <= 1e-4 and entry["parity"]["seeds"] == list(range(8))
    assert [i["name"] for i in entry["inputs"]] == ["z", "label"]
    assert entry["inputs"][0]["shape"][0] == "batch"  # dynamic batch
    # Independently of the export's own check: a new session, other seeds and a batch of 5.
    checkpoint = load_checkpoint(tiny_gan_run / "checkpoint.pt")
    options = json.loads(checkpoint["options"])
    g, _ = build_models(options)
    g.load_state_dict(checkpoint["generator_ema"])
    g.eval()
    z = latents_for_seeds([11, 12, 13, 14, 15], options["latent_dim"], 0.8)
    labels = np.array([0, 1, 2, 3, 0])
    with torch.no_grad():
        expected = g(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    session = ort.InferenceSession(str(exports_dir / "generator.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"z": z, "label": labels})
    assert np.abs(got - expected).max() <= 1e-4


def test_manifest_records_the_contract(exports_dir, manifest):
    assert manifest["version"] == 2 and manifest["created"]
    g = manifest["models"]["generator"]
    assert g["sha256"] == sha256_file(exports_dir / "generator.onnx")
    assert g["latent_dim"] == 100 and g["image_size"] == 32 and g["channels"] == 1
    assert g["class_labels"] == ["class0", "class1", "class2", "class3"]
    assert "PCG64" in g["latent"]["rng"] and g["opset"] >= 17
    assert g["metrics"]["fid"] >= 0 and "baseline_real_vs_real" in g["metrics"]
    assert g["training"]["dataset"] == "fake"
    # the style graph: relu3_1 at 1/4 size and relu2_1 at 1/2 (a Laplacian pyramid), then relu2_1 and
    # relu1_1 at full size; inputs multiples of 4 * 4
    s = manifest["models"]["stylizer"]
    assert s["coarse_scales"] == [4] and s["levels"] == ["relu3_1", "relu2_1", "relu1_1"] and s["size_multiple"] == 16
    assert s["fine_scales"] == [2] and manifest["style"]["size_multiple"] == 16
    assert s["coarse_shading_radius"] == 2  # the pyramid keeps the shading
    assert s["parity"]["max_abs_diff"] <= s["parity"]["atol"]
    # random VGG weights are not close to low rank: both graphs keep the exact conv1_2
    assert s["conv1_2_low_rank"] is None and manifest["models"]["style_encoder"]["conv1_2_low_rank"] is None


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--style-coarse-scales", "16,4,8", "--style-coarse-scales must be auto or decreasing powers of two"),
        ("--style-fine-scales", "3", "--style-fine-scales must be auto, none or decreasing powers of two"),
        ("--style-shading-radius", "-1", "--style-shading-radius must be 0 or more, not -1"),
        ("--style-conv1-2-energy", "1.5", "--style-conv1-2-energy must be in (0, 1], not 1.5"),
        ("--style-default-strength", "1.2", "--style-default-strength must be in [0, 1], not 1.2"),
        ("--style-patch-tone", "-1", "--style-patch-tone must be in [0, 4], not -1.0"),
    ],
    ids=["coarse-scales", "fine-scales", "shading-radius", "conv1-2-energy", "default-strength", "patch-tone"],
)
def test_export_refuses_bad_pyramid_options_clearly(tmp_path, capsys, flag, value, message):
    from training.export import main

    code = main(["--runs-root", str(tmp_path), flag, value, "--out", str(tmp_path / "x")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_service_refuses_a_tampered_model(exports_dir, tmp_path):
    copy = tmp_path / "exports"
    shutil.copytree(exports_dir, copy)
    load_manifest(copy)  # intact: accepted
    data = bytearray((copy / "generator.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "generator.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_manifest(copy)
    (copy / "generator.onnx").unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="make train export"):
        load_manifest(copy)


def test_the_manifest_is_read_through_its_schema_and_refused_with_the_field_named(exports_dir, tmp_path):
    """The schema is the contract: a manifest written by training reads back field for field, and one
    of another version, missing a field, with a field of the wrong type or one the schema does not
    know is refused with that field named (a half-migrated or hand-edited export never serves)."""
    text = (exports_dir / "manifest.json").read_text()
    assert read_manifest(exports_dir / "manifest.json").to_json() == text  # nothing lost or added
    copy = tmp_path / "exports"
    shutil.copytree(exports_dir, copy)

    def refused(change, match: str) -> None:
        data = json.loads(text)
        change(data)
        (copy / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(ManifestError, match=match):
            load_manifest(copy)

    refused(lambda d: d.update(version=1), "manifest version 1, this service reads 2: re-run `make export`")
    refused(lambda d: d["models"]["generator"].pop("latent_dim"), r"models\.generator\.latent_dim: Field required")
    refused(lambda d: d["style"]["presets"][0].update(name=None), r"style\.presets\.0\.name: Input should be")
    refused(lambda d: d["models"]["stylizer"].update(coarse_scales_rule="prose"), "coarse_scales_rule: Extra inputs")
    refused(lambda d: d["models"].pop("stylizer"), "style_encoder and stylizer come together")


def test_failed_parity_writes_nothing(tmp_path):
    module = torch.nn.Linear(3, 2)
    dim = torch.export.Dim("batch", min=1, max=64)
    with pytest.raises(ParityError):  # an impossible tolerance
        export_checked(
            module,
            (torch.randn(2, 3),),
            tmp_path / "m.onnx",
            ["x"],
            ["y"],
            {"x": {0: dim}},
            [(torch.randn(4, 3),)],
            atol=-1.0,
        )
    assert list(tmp_path.iterdir()) == []
    result = export_checked(
        module, (torch.randn(2, 3),), tmp_path / "m.onnx", ["x"], ["y"], {"x": {0: dim}}, [(torch.randn(4, 3),)]
    )
    assert result.max_abs_diff <= 1e-6 and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_an_export_prints_only_real_warnings(tmp_path):
    """The exporter's known noise (torchvision ops not registered, a pytree deprecation, shared
    axis names) is silenced at the call site; a warning the model itself raises still shows. In a
    fresh interpreter: the registration messages come once per process."""
    code = f"""
import warnings, torch
from pathlib import Path
from training.onnx_export import export_checked

class Two(torch.nn.Module):  # two inputs sharing the batch axis: the exporter's axis-name message
    def forward(self, x, y):
        if torch.compiler.is_exporting():
            warnings.warn("a real warning from the model", UserWarning)
        return x * 2 + y.mean()

batch = torch.export.Dim("batch")
export_checked(Two(), (torch.rand(2, 3), torch.rand(2, 1)), Path({str(tmp_path / "m.onnx")!r}), ["x", "y"], ["out"],
               {{"x": {{0: batch}}, "y": {{0: batch}}}}, [(torch.rand(3, 3), torch.rand(3, 1))])
"""
    done = run_fresh(code)
    assert done.returncode == 0, done.stderr
    assert "a real warning from the model" in done.stderr
    for noise in ("torchvision is not installed", "LeafSpec", "will not be used, since it shares"):
        assert noise not in done.stderr, done.stderr
