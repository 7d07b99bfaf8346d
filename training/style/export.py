"""Export a trained AdaIN run to ONNX (encoder + stylizer) and write the style presets.

``export_style(run_dir, out_dir, styles_dir)`` writes, under ``out_dir``:

- ``vgg_encoder.onnx``: ``image`` (N, 3, H, W) float32 RGB [0, 1] -> ``features`` (N, C, H/m, W/m);
- ``decoder.onnx``: ``features``, ``style_mean`` (N, C), ``style_std`` (N, C), ``strength`` (N,)
  -> ``image`` (N, 3, H, W) in [0, 1] (AdaIN and the strength blend are inside this graph);
- ``style_presets.npz`` (``<name>__mean``, ``<name>__std``, float32 (C,)) computed with the
  exported encoder through ONNX Runtime, and ``presets/<name>.jpg`` thumbnails.

It returns the manifest fragment; the top-level ``training/export.py`` hashes files and writes
the manifest.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.onnx_export import ExportResult, export_checked
from training.runs import MetricsLog, atomic_write_bytes, load_checkpoint
from training.style.data import bundled_style_images, find_images, load_image
from training.style.functions import EPS, STYLE_STATS_DEFINITION
from training.style.model import Decoder, Encoder, Stylizer, feature_channels, size_multiple
from training.style.train import CHECKPOINT, check_same_vgg, recorded_source
from training.vgg import load_vgg

ATOL = 1e-4
# fp32 convolutions accumulate rounding error relative to the magnitude of their outputs; VGG
# features of real weights reach ~1e3 with the HED normalisation (0-255 inputs), where 1e-4 is
# below float32 resolution. The encoder is therefore checked to 2e-6 of its peak |feature|
# (about 16x float32 epsilon), and never looser than needed: max(ATOL, rel * peak).
ENCODER_REL_ATOL = 2e-6
STYLE_SIDE = 512  # style images are resized to this long side before their statistics
THUMB_SIDE = 128


def export_style(run_dir: Path, out_dir: Path, styles_dir: Path | None = None,
                 log: Callable[[str], None] = print, style_side: int = STYLE_SIDE) -> dict[str, Any]:
    """Export the run's encoder and stylizer, and the presets; returns the manifest fragment.

    ``style_side``: long side (px) style images are resized to before their statistics.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    opt, layer = ckpt["options"], ckpt["decoder_config"]["layer"]
    vgg, info = load_vgg(recorded_source(ckpt["vgg"]), arch=ckpt["vgg"]["arch"], last_layer=layer,
                         log=log)
    check_same_vgg(ckpt["vgg"], info)
    decoder = Decoder(layer)
    decoder.load_state_dict(ckpt["decoder"])
    encoder, stylizer = Encoder(vgg).eval(), Stylizer(decoder).eval()

    enc = export_encoder(encoder, out_dir / "vgg_encoder.onnx", log)
    dec = export_stylizer(encoder, stylizer, out_dir / "decoder.onnx", log)
    presets = write_presets(out_dir, out_dir / "vgg_encoder.onnx", styles_dir, style_side, log)

    m, channels = size_multiple(layer), feature_channels(layer)
    vgg_fields = {k: info[k] for k in ("source", "arch", "weights", "weights_sha256",
                                       "normalization", "random_weights")}
    common = {"encoder_layer": layer, "feature_channels": channels, "size_multiple": m}
    models = {
        "vgg_encoder": {"path": "vgg_encoder.onnx", **enc.manifest_fields(), "role": "vgg_encoder",
                        **common, "vgg": vgg_fields, "normalization": info["normalization"],
                        "input_range": [0.0, 1.0], "color": "RGB"},
        "decoder": {"path": "decoder.onnx", **dec.manifest_fields(), "role": "decoder", **common,
                    "output_range": [0.0, 1.0], "adain_eps": EPS,
                    "strength": "features = s * adain(features) + (1 - s) * features, s in [0, 1]"},
    }
    return {
        "models": models,
        "assets": ["style_presets.npz"] + [p["thumbnail"] for p in presets],
        "style": {
            "vgg": vgg_fields, **common,
            "style_stats": STYLE_STATS_DEFINITION, "style_image_side": style_side,
            "style_image_resize": f"Pillow LANCZOS to long side {style_side} px (up or down, aspect "
                                  "kept), RGB float32 / 255, then the encoder",
            "presets_file": "style_presets.npz", "presets": presets,
            "training": opt, "metrics": training_metrics(run_dir, ckpt),
        },
    }


# ----------------------------------------------------------------------------- ONNX


def export_encoder(encoder: Encoder, path: Path, log: Callable[[str], None]) -> ExportResult:
    """``image`` (N, 3, H, W) -> ``features``; dynamic batch, height and width."""
    dims = _dims()
    example = (_images(2, 96, 128, seed=1),)
    checks = [(_images(1, 72, 56, seed=2),), (_images(3, 64, 88, seed=3),)]
    with torch.no_grad():
        peak = max(float(encoder(*c).abs().max()) for c in checks)
    atol = max(ATOL, ENCODER_REL_ATOL * peak)
    result = export_checked(encoder, example, path, ["image"], ["features"],
                            {"image": {0: dims["batch"], 2: dims["height"], 3: dims["width"]}},
                            checks, atol=atol)
    log(f"exported {path.name}: max |torch - ORT| {result.max_abs_diff:.3g} "
        f"(atol {atol:.3g}, peak |feature| {peak:.3g})")
    return result


def export_stylizer(encoder: Encoder, stylizer: Stylizer, path: Path,
                    log: Callable[[str], None]) -> ExportResult:
    """``features``, ``style_mean``, ``style_std``, ``strength`` -> ``image``; dynamic N, h, w."""
    dims = _dims()
    example = _stylizer_inputs(encoder, 2, 96, 128, seed=4)
    checks = [_stylizer_inputs(encoder, 1, 72, 56, seed=5), _stylizer_inputs(encoder, 3, 64, 88, seed=6)]
    batch = {0: dims["batch"]}
    shapes = {"features": {0: dims["batch"], 2: dims["height"], 3: dims["width"]},
              "style_mean": batch, "style_std": batch, "strength": batch}
    result = export_checked(stylizer, example, path, ["features", "style_mean", "style_std", "strength"],
                            ["image"], shapes, checks, atol=ATOL)
    log(f"exported {path.name}: max |torch - ORT| {result.max_abs_diff:.3g} (atol {ATOL:g})")
    return result


def _dims() -> dict[str, Any]:
    from torch.export import Dim

    return {"batch": Dim("batch", min=1, max=1024), "height": Dim("height", min=8, max=8192),
            "width": Dim("width", min=8, max=8192)}


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth random images (N, 3, H, W) in [0, 1]: low-frequency noise looks more like photos."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 8), max(2, w // 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _stylizer_inputs(encoder: Encoder, n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Real-scale features of one image set and statistics of another, strengths in [0, 1]."""
    from training.style.functions import mean_std

    with torch.no_grad():
        feats = encoder(_images(n, h, w, seed))
        mean, std = mean_std(encoder(_images(n, w, h, seed + 100)))
    strength = torch.linspace(1.0, 0.25, n) if n > 1 else torch.ones(1)
    return feats, mean, std, strength


# ----------------------------------------------------------------------------- presets


def preset_name(stem: str, taken: set[str]) -> str:
    """File stem -> lower-case [a-z0-9_-] name, unique among ``taken`` (adds -2, -3, ...)."""
    base = re.sub(r"[^a-z0-9_-]+", "_", stem.lower()).strip("_-") or "style"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def collect_styles(styles_dir: Path | None) -> list[tuple[str, str, np.ndarray]]:
    """(name, source, HxWx3 uint8) for every bundled style image, then every image in ``styles_dir``."""
    out: list[tuple[str, str, np.ndarray]] = []
    taken: set[str] = set()
    for name, img in bundled_style_images().items():
        name = preset_name(name, taken)
        taken.add(name)
        out.append((name, f"bundled:{name}", img))
    for path in find_images(styles_dir) if styles_dir else []:
        name = preset_name(path.stem, taken)
        taken.add(name)
        out.append((name, f"file:{path.relative_to(styles_dir).as_posix()}", load_image(path)))
    return out


def resize_long_side(img: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> long side ``side`` with Pillow LANCZOS (up or down), aspect kept."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def style_stats(session, img: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (each (C,) float32) of the encoder features of a style image, numpy only."""
    x = resize_long_side(img, side).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    feats = session.run(["features"], {"image": x})[0].astype(np.float64)  # (1, C, h, w)
    mean = feats.mean(axis=(2, 3))
    std = np.sqrt(((feats - mean[..., None, None]) ** 2).mean(axis=(2, 3)) + EPS)
    return mean[0].astype(np.float32), std[0].astype(np.float32)


def thumbnail_jpeg(img: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(resize_long_side(img, side)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_presets(out_dir: Path, encoder_onnx: Path, styles_dir: Path | None, side: int,
                  log: Callable[[str], None]) -> list[dict[str, str]]:
    """Statistics (through the exported encoder on ONNX Runtime) and thumbnails of every preset."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"])
    arrays: dict[str, np.ndarray] = {}
    presets = []
    for name, source, img in collect_styles(styles_dir):
        arrays[f"{name}__mean"], arrays[f"{name}__std"] = style_stats(session, img, side)
        thumb = f"presets/{name}.jpg"
        atomic_write_bytes(out_dir / thumb, thumbnail_jpeg(img))
        presets.append({"name": name, "thumbnail": thumb, "source": source})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out_dir / "style_presets.npz", buf.getvalue())
    log(f"presets: {len(presets)} ({', '.join(p['name'] for p in presets)})")
    return presets


def training_metrics(run_dir: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Last logged losses, the step count and the training time of the run."""
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    last = records[-1] if records else {}
    return {"steps": ckpt["step"], "train_seconds": round(float(ckpt.get("train_seconds", 0.0)), 1),
            **{k: last[k] for k in ("loss", "content", "style", "steps_per_s") if k in last}}
