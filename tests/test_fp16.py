"""fp16 variants: written beside each fp32 model, verified like every file, their parity against
PyTorch fp32 recorded and true, and chosen by the service only where they are meant to run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from service.manifest import ManifestError, choose_precision, load_manifest
from service.runtime import open_session
from service.sampling import latents_for_seeds
from service.style import StyleTransfer
from tests.hostile_images import gradient
from training.export import load_generator
from training.onnx_export import FP16_MIN_PSNR_DB, psnr_db

CPU = ["CPUExecutionProvider"]


def test_every_variant_is_a_verified_file_with_its_parity_recorded(exports_dir):
    manifest = load_manifest(exports_dir)  # sha256 of every file, the variants included
    assets = {a["path"] for a in manifest["assets"]}
    for role in ("generator", "stylizer"):
        fp16 = manifest["models"][role]["variants"]["fp16"]
        assert fp16["path"] in assets and fp16["path"] != manifest["models"][role]["path"]
        parity = fp16["parity"]
        assert parity["vs"] == "PyTorch fp32" and parity["bound_psnr_db"] == FP16_MIN_PSNR_DB
        assert parity["within_bound"] == (parity["min_psnr_db"] >= FP16_MIN_PSNR_DB)


def test_the_generators_fp16_variant_meets_its_recorded_parity_on_onnx_runtime(exports_dir, tiny_gan_run):
    manifest = json.loads((exports_dir / "manifest.json").read_text())
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


def test_the_stylizers_fp16_variant_stylises_like_fp32(exports_dir):
    manifest = json.loads((exports_dir / "manifest.json").read_text())
    models = manifest["models"]
    encoder = open_session(exports_dir / models["style_encoder"]["path"], CPU)
    fp32 = StyleTransfer(exports_dir, manifest, encoder, open_session(exports_dir / models["stylizer"]["path"], CPU))
    fp16 = StyleTransfer(
        exports_dir, manifest, encoder, open_session(exports_dir / models["stylizer"]["variants"]["fp16"]["path"], CPU)
    )
    content = gradient(96, 72)
    for name in list(fp32.presets)[:2]:
        a = fp32.stylize(content, name, 1.0, False, 512).astype(np.float64) / 255
        b = fp16.stylize(content, name, 1.0, False, 512).astype(np.float64) / 255
        assert psnr_db(a, b) >= FP16_MIN_PSNR_DB - 3  # uint8 rounding on top of the recorded fp16 error


def test_precision_is_fp16_only_on_cuda_by_default_and_refused_when_out_of_bound(exports_dir):
    entry = json.loads((exports_dir / "manifest.json").read_text())["models"]["stylizer"]
    assert entry["variants"]["fp16"]["parity"]["within_bound"]
    assert choose_precision("stylizer", entry, "auto", on_cuda=False) == ("stylizer.onnx", "fp32")
    assert choose_precision("stylizer", entry, "auto", on_cuda=True) == ("stylizer.fp16.onnx", "fp16")
    assert choose_precision("stylizer", entry, "fp32", on_cuda=True) == ("stylizer.onnx", "fp32")
    assert choose_precision("stylizer", entry, "fp16", on_cuda=False) == ("stylizer.fp16.onnx", "fp16")
    worse = copy.deepcopy(entry)
    worse["variants"]["fp16"]["parity"].update(min_psnr_db=20.0, within_bound=False)
    assert choose_precision("stylizer", worse, "auto", on_cuda=True) == ("stylizer.onnx", "fp32")
    with pytest.raises(ManifestError, match="20.0 dB from PyTorch fp32, below its 35.0 dB bound"):
        choose_precision("stylizer", worse, "fp16", on_cuda=True)
    with pytest.raises(ManifestError, match="no fp16 variant"):
        choose_precision("stylizer", {"path": "stylizer.onnx"}, "fp16", on_cuda=True)
    with pytest.raises(ManifestError, match="use one of auto, fp32, fp16"):
        choose_precision("stylizer", entry, "int4", on_cuda=True)
