"""fp16 variants: written beside each fp32 model, verified like every file, their parity against
PyTorch fp32 recorded and true (on the CPU provider and in fp16 arithmetic), and chosen by the
service only where they are meant to run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.hostile_images import gradient
from service.manifest import ManifestError, ModelEntry, Parity, choose_precision, load_manifest
from service.runtime import open_session
from service.sampling import latents_for_seeds
from service.style import StyleTransfer, _to_input, pad_for_cascade, style_input
from training.export import load_generator
from training.onnx_export import FP16_MIN_PSNR_DB, fp16_arithmetic_scores, fp16_parity, fp16_variant, psnr_db

CPU = ["CPUExecutionProvider"]


def test_every_variant_is_a_verified_file_with_its_parity_recorded(exports_dir):
    manifest = load_manifest(exports_dir)  # sha256 of every file, the variants included
    assets = {a.path for a in manifest.assets}
    for role in ("generator", "stylizer"):
        entry = manifest.models.roles()[role]
        fp16 = entry.variants["fp16"]
        assert fp16.path in assets and fp16.path != entry.path
        parity = fp16.parity
        assert parity.vs == "PyTorch fp32" and parity.bound_psnr_db == FP16_MIN_PSNR_DB
        arithmetic = parity.fp16_arithmetic
        assert arithmetic.finite == (arithmetic.min_psnr_db is not None)
        assert parity.within_bound == (
            parity.min_psnr_db >= FP16_MIN_PSNR_DB and arithmetic.finite and arithmetic.min_psnr_db >= FP16_MIN_PSNR_DB
        )


class Overflows(torch.nn.Module):
    """y = (x W) / 1000: with x and W all 40 over 64 channels, x W is 102400, past float16's 65504,
    while y (102.4) is not."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((64, 64), 40.0))

    def forward(self, x):
        return (x @ self.w) / 1000.0


def test_the_fp16_arithmetic_check_refuses_an_overflow_the_cpu_provider_computes_past(tmp_path):
    """As the stylizer did on CUDA (all-NaN images from a variant with 39 dB on the CPU provider):
    the CPU provider computes the fp16 MatMul in float32 and matches PyTorch; fp16 arithmetic gives inf."""
    x = torch.full((2, 64), 40.0)
    torch.onnx.export(Overflows().eval(), (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])
    ops = fp16_variant(tmp_path / "m.onnx", tmp_path / "m.fp16.onnx")
    assert "MatMul" in ops
    reference, feed = Overflows()(x).detach().numpy(), {"x": x.numpy()}
    entry = fp16_parity(
        tmp_path / "m.fp16.onnx", [reference], [feed], "y", 200.0, ops, arithmetic=([reference], [feed])
    )
    parity = entry.parity
    assert parity.min_psnr_db is None or parity.min_psnr_db >= FP16_MIN_PSNR_DB  # the CPU provider: fine
    assert not parity.fp16_arithmetic.finite and parity.fp16_arithmetic.min_psnr_db is None
    assert not parity.within_bound
    model = ModelEntry(
        path="m.onnx", sha256="0" * 64, opset=18, inputs=[], outputs=[], parity=_parity(), variants={"fp16": entry}
    )
    with pytest.raises(ManifestError, match="overflows float16"):
        choose_precision("m", model, "fp16", on_cuda=True)
    assert choose_precision("m", model, "auto", on_cuda=True)[1] == "fp32"


def _parity() -> Parity:
    return Parity(max_abs_diff=0.0, atol=1e-4, checked_on="CPUExecutionProvider")


def test_the_stylizers_recorded_fp16_arithmetic_holds_on_other_inputs(exports_dir, manifest):
    """The stylizer's fp16 graph, in fp16 arithmetic, on a picture and a style the export did not
    check: finite exactly when the export recorded it finite, and then within the bound."""
    entry = manifest["models"]["stylizer"]
    cpu = StyleTransfer(
        exports_dir,
        load_manifest(exports_dir).style,
        open_session(exports_dir / manifest["models"]["style_encoder"]["path"], CPU),
        open_session(exports_dir / entry["path"], CPU),
    )
    name = list(cpu.presets)[-1]
    x = _to_input(pad_for_cascade(gradient(96, 80), cpu.multiple, cpu.step))
    feed = {"content": x, "strength": np.ones(1, np.float32)}
    feed.update((n, style_input(n, v)) for n, v in zip(cpu.stats_names, cpu.presets[name]))
    reference = cpu.run_stylizer(cpu.stylizer, x, cpu.presets[name], 1.0)
    (score,) = fp16_arithmetic_scores(
        exports_dir / entry["variants"]["fp16"]["path"], [reference], [feed], "image", 1.0
    )
    recorded = entry["variants"]["fp16"]["parity"]["fp16_arithmetic"]
    assert np.isfinite(score) == recorded["finite"]
    if recorded["finite"]:
        assert score >= min(FP16_MIN_PSNR_DB, recorded["min_psnr_db"] - 3)


def test_the_generators_fp16_variant_meets_its_recorded_parity_on_onnx_runtime(exports_dir, manifest, tiny_gan_run):
    entry = manifest["models"]["generator"]
    module, options = load_generator(tiny_gan_run)
    seeds = list(range(100, 132))  # not the seeds the export checked
    z = latents_for_seeds(seeds, options["latent_dim"])
    labels = np.arange(len(seeds), dtype=np.int64) % options["num_classes"]
    with torch.no_grad():
        reference = module(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    session = open_session(exports_dir / entry["variants"]["fp16"]["path"], CPU)
    (fp16,) = session.run(["image"], {"z": z, "label": labels})
    assert fp16.dtype == np.float32  # fp32 in and out: the service feeds it unchanged
    assert psnr_db(reference, fp16, peak=2.0) >= min(
        FP16_MIN_PSNR_DB, entry["variants"]["fp16"]["parity"]["min_psnr_db"] - 3
    )


def test_the_stylizers_fp16_variant_stylises_like_fp32(exports_dir, manifest):
    models, style = manifest["models"], load_manifest(exports_dir).style
    encoder = open_session(exports_dir / models["style_encoder"]["path"], CPU)
    fp32 = StyleTransfer(exports_dir, style, encoder, open_session(exports_dir / models["stylizer"]["path"], CPU))
    fp16 = StyleTransfer(
        exports_dir, style, encoder, open_session(exports_dir / models["stylizer"]["variants"]["fp16"]["path"], CPU)
    )
    content = gradient(96, 72)
    for name in list(fp32.presets)[:2]:
        a = fp32.stylize(content, name, 1.0, False, 512).astype(np.float64) / 255
        b = fp16.stylize(content, name, 1.0, False, 512).astype(np.float64) / 255
        assert psnr_db(a, b) >= FP16_MIN_PSNR_DB - 3  # uint8 rounding on top of the recorded fp16 error


def test_precision_is_fp16_only_on_cuda_by_default_and_refused_when_out_of_bound(exports_dir):
    entry = load_manifest(exports_dir).models.generator
    assert entry.variants["fp16"].parity.within_bound
    assert choose_precision("generator", entry, "auto", on_cuda=False) == ("generator.onnx", "fp32")
    assert choose_precision("generator", entry, "auto", on_cuda=True) == ("generator.fp16.onnx", "fp16")
    assert choose_precision("generator", entry, "fp32", on_cuda=True) == ("generator.onnx", "fp32")
    assert choose_precision("generator", entry, "fp16", on_cuda=False) == ("generator.fp16.onnx", "fp16")
    variant = entry.variants["fp16"]
    parity = variant.parity.model_copy(update={"min_psnr_db": 20.0, "within_bound": False})
    worse = entry.model_copy(update={"variants": {"fp16": variant.model_copy(update={"parity": parity})}})
    assert choose_precision("generator", worse, "auto", on_cuda=True) == ("generator.onnx", "fp32")
    with pytest.raises(ManifestError, match="20.0 dB from PyTorch fp32, below its 35.0 dB bound"):
        choose_precision("generator", worse, "fp16", on_cuda=True)
    with pytest.raises(ManifestError, match="no fp16 variant"):
        choose_precision("generator", entry.model_copy(update={"variants": {}}), "fp16", on_cuda=True)
    with pytest.raises(ManifestError, match="use one of auto, fp32, fp16"):
        choose_precision("generator", entry, "int4", on_cuda=True)
