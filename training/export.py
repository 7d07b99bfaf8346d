"""Export trained runs to ONNX and write ``exports/manifest.json``: ``python -m training.export``.

Every model is exported through the public ``torch.onnx.export`` and checked against ONNX Runtime
on fixed inputs before it is kept. All files are staged in a temporary folder beside the output,
moved into place, and the manifest — the only contract with the service — is written last,
atomically, with the sha256 of every file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from service import __version__
from service.manifest import VERSION, FileEntry, Generator, Manifest, Models, sha256_file
from service.sampling import LATENT_RULE, latents_for_seeds
from training.gan.options import build_models, stored_options
from training.onnx_export import export_checked, fp16_parity, fp16_variant, fp16_verdict
from training.runs import CHECKPOINT, atomic_write_bytes, load_checkpoint
from training.style.export import CONV1_2_ENERGY, DEFAULT_STRENGTH, export_style
from training.style.model import FINE_SCALES, PYRAMID, SHADING_RADIUS, check_scales
from training.style.presets import check_styles_dir
from training.style.swap import DEFAULT_PATCHES, PatchSettings

ATELIER_VERSION = __version__  # recorded in the manifest: which code wrote it
PARITY_SEEDS = list(range(8))  # the first seeds of the training grid


class ExportError(RuntimeError):
    pass


def export_generator(run: Path, out_dir: Path, log=print) -> Generator:
    """The EMA generator of a GAN run -> ``generator.onnx`` and its manifest entry."""
    module, options = load_generator(run)
    conditional = bool(options["num_classes"])
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = ["z", "label"] if conditional else ["z"]

    def inputs(seeds: list[int]) -> tuple[torch.Tensor, ...]:
        z = torch.from_numpy(latents_for_seeds(seeds, options["latent_dim"]))
        if not conditional:
            return (z,)
        return z, torch.arange(len(seeds), dtype=torch.int64) % options["num_classes"]

    result = export_checked(
        module,
        inputs([100, 101]),
        out_dir / "generator.onnx",
        input_names=names,
        output_names=["image"],
        dynamic_shapes={name: {0: batch} for name in names},
        check_inputs=[inputs(PARITY_SEEDS), inputs([7])],
    )
    log(f"generator.onnx: max |PyTorch - ONNX Runtime| = {result.max_abs_diff:.2e} on seeds {PARITY_SEEDS}")
    variant = out_dir / "generator.fp16.onnx"
    ops = fp16_variant(out_dir / "generator.onnx", variant)
    check = inputs(list(range(64)))
    with torch.no_grad():
        reference = module(*check).numpy()
    feed = dict(zip(names, (t.numpy() for t in check)))
    small = ([reference[:8]], [{k: v[:8] for k, v in feed.items()}])  # fp16 arithmetic: 8 seeds (slow evaluator)
    fp16 = fp16_parity(variant, [reference], [feed], "image", 2.0, ops, arithmetic=small)
    log(f"{variant.name}: PSNR vs PyTorch fp32 {fp16.parity.min_psnr_db} dB on 64 seeds, {fp16_verdict(fp16.parity)}")
    metrics_path = run / "metrics.json"
    return Generator(
        **result.entry_fields(seeds=PARITY_SEEDS),
        variants={"fp16": fp16},
        latent_dim=options["latent_dim"],
        image_size=options["image_size"],
        channels=options["channels"],
        output_range=(-1.0, 1.0),
        class_labels=options["class_names"] if conditional else None,
        latent=LATENT_RULE,
        dataset=options["dataset"],
        run=str(run.resolve()),
        training=options,
        metrics=json.loads(metrics_path.read_text()) if metrics_path.exists() else None,
    )


def load_generator(run: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A GAN run's EMA generator in eval mode, taking ``(z, label)`` when conditional and ``(z,)``
    otherwise (the exported graph's inputs), and the run's options."""
    checkpoint_path = run / CHECKPOINT
    if not checkpoint_path.exists():
        raise ExportError(f"{run}: no checkpoint.pt (train first: make train)")
    checkpoint = load_checkpoint(checkpoint_path)
    options = stored_options(checkpoint)
    generator, _ = build_models(options)
    generator.load_state_dict(checkpoint["generator_ema"])
    generator.eval()
    return (generator if options.num_classes else _Unconditional(generator)), options.to_dict()


class _Unconditional(torch.nn.Module):
    """Gives an unconditional generator a one-input signature for export."""

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


def export_all(
    gan_run: Path | None,
    style_run: Path | None,
    out_dir: Path,
    styles_dir: Path | None,
    log=print,
    style_options: dict[str, Any] | None = None,
) -> Manifest:
    """Export the runs into ``out_dir`` and write its manifest, last; ``style_options``: ``transform``, ``levels``,
    ``coarse_scales``, ``fine_scales``, ``shading_radius``, ``conv1_2_energy`` and ``patches`` for
    ``export_style``."""
    if gan_run is None and style_run is None:
        raise ExportError("nothing to export: no GAN run and no style run (train first: make train)")
    if style_run is not None and styles_dir is not None:
        check_styles_dir(styles_dir)  # before minutes of export, not after
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        models: dict[str, Any] = {}
        assets: list[str] = []
        style = None
        if gan_run is not None:
            models["generator"] = export_generator(gan_run, staging, log)
        if style_run is not None:
            style_models, style_assets, style = export_style(
                style_run, staging, styles_dir, log=log, **(style_options or {})
            )
            models.update(style_models)
            assets.extend(style_assets)
        for entry in models.values():
            assets.extend(variant.path for variant in entry.variants.values())  # verified like the rest
        manifest = Manifest(
            version=VERSION,
            atelier_version=ATELIER_VERSION,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            models=Models(**models),
            assets=[FileEntry(path=a, sha256=sha256_file(staging / a)) for a in sorted(assets)],
            **({"style": style} if style is not None else {}),
        )
        _replace_contents(staging, out_dir)
        atomic_write_bytes(out_dir / "manifest.json", manifest.to_json().encode())
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_contents(staging: Path, out_dir: Path) -> None:
    """Move every staged file into ``out_dir`` (each move atomic); the manifest follows last."""
    (out_dir / "manifest.json").unlink(missing_ok=True)  # no manifest may describe a half-replaced folder
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = out_dir / src.relative_to(staging)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def _scales(text: str, flag: str, examples: str, none: bool = False) -> list[int] | None:
    """A scales option: "auto" -> None (the export decides), "none" (if allowed) -> [], else e.g.
    "16,8,4" -> [16, 8, 4] (decreasing powers of two)."""
    if text == "auto":
        return None
    if none and text == "none":
        return []
    try:
        return check_scales([int(part) for part in text.split(",")])
    except ValueError:
        words = "auto, none" if none else "auto"
        raise ValueError(
            f"{flag} must be {words} or decreasing powers of two such as {examples}, not {text!r}"
        ) from None


def _patches(args: argparse.Namespace) -> PatchSettings | None:
    """The ``--style-patch-*`` options; ``--style-patch-scale``: "auto" (the coarsest scale), "0" (no
    patches) or a scale."""
    if args.style_patch_scale == "0":
        return None
    scales = _scales(args.style_patch_scale, "--style-patch-scale", "8, auto or 0")
    if scales is not None and len(scales) != 1:
        raise ValueError(f"--style-patch-scale takes one scale, not {args.style_patch_scale!r}")
    for flag, value, top in (
        ("--style-patch-stride", args.style_patch_stride, 4),
        ("--style-patch-block", args.style_patch_block, 32),
    ):
        if not 1 <= value <= top:
            raise ValueError(f"{flag} must be in [1, {top}], not {value}")
    return PatchSettings(
        scale=scales and scales[0],
        prior=args.style_patch_prior,
        stride=args.style_patch_stride,
        block=args.style_patch_block,
        shading=args.style_patch_shading,
        detail_gain=args.style_detail_gain,
        tone=args.style_patch_tone,
    )


def _latest(runs_root: Path, kind: str) -> Path | None:
    latest = runs_root / kind / "latest"
    return latest.resolve() if (latest / CHECKPOINT).exists() else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--gan-run", type=Path, default=None, help="GAN run folder (default: runs/gan/latest if it exists)")
    p.add_argument(
        "--style-run", type=Path, default=None, help="style run folder (default: runs/style/latest if it exists)"
    )
    p.add_argument("--no-gan", action="store_true", help="export no generator")
    p.add_argument("--no-style", action="store_true", help="export no style model")
    p.add_argument("--runs-root", type=Path, default=Path("runs"))
    p.add_argument(
        "--styles-dir", type=Path, default=None, help="extra style presets: every jpg/png/webp in this folder"
    )
    p.add_argument(
        "--style-transform",
        choices=("ot", "wct"),
        default="wct",
        help="feature transform: whitening-colouring or the Gaussian optimal-transport map",
    )
    p.add_argument(
        "--style-levels",
        default=None,
        help="comma-separated cascade levels, e.g. relu3_1,relu1_1 (default: every level the run trained)",
    )
    p.add_argument(
        "--style-coarse-scales",
        default="auto",
        help="the coarsest level runs on the photo shrunk by each of these factors, smallest first "
        "(a Laplacian pyramid: larger strokes), e.g. 16,8,4,2; 1 for none; auto: "
        f"{','.join(map(str, PYRAMID))} when the coarsest level is relu2_1 or relu1_1, else 1, less the "
        "sizes --style-fine-scales gives the next level",
    )
    p.add_argument(
        "--style-fine-scales",
        default="auto",
        help="the pyramid goes on at these factors (below the coarse ones) with the next level painting "
        f"them, e.g. 2; none; auto: {','.join(map(str, FINE_SCALES))} below the coarse scales when the "
        "next level is relu1_1, else none",
    )
    p.add_argument(
        "--style-shading-radius",
        type=int,
        default=SHADING_RADIUS,
        help="the pyramid's passes keep the photo's light and dark above this scale (pixels at each size), "
        "so the style's colours follow its objects; 0: the passes repaint the shading too",
    )
    p.add_argument(
        "--style-conv1-2-energy",
        type=float,
        default=CONV1_2_ENERGY,
        help="the served encoder's conv1_2 as a low-rank pair keeping this share of its singular values' "
        "energy (a 3x3 conv into fewer channels, then 1x1; recorded in the manifest); 1: exact",
    )
    p.add_argument(
        "--style-patch-scale",
        default="auto",
        help="the coarse pyramid scale at which the coarsest level swaps the style's own patches in (its "
        "shapes) instead of moving its statistics; auto: the coarsest scale; 0: no patches",
    )
    p.add_argument(
        "--style-patch-prior",
        type=float,
        default=DEFAULT_PATCHES.prior,
        help="where the photo is flat, how strongly the style's own arrangement is kept (0: none)",
    )
    p.add_argument(
        "--style-patch-stride",
        type=int,
        default=DEFAULT_PATCHES.stride,
        help="the style's patches are taken at every this many feature positions each way (2: a quarter "
        "of the matching's work)",
    )
    p.add_argument(
        "--style-patch-block",
        type=int,
        default=DEFAULT_PATCHES.block,
        help="where the photo is flat, it copies squares of this many of the style's patch positions a side",
    )
    p.add_argument(
        "--style-patch-shading",
        action="store_true",
        help="the patch pass keeps the photo's large-scale light and dark, as --style-shading-radius says",
    )
    p.add_argument(
        "--style-detail-gain",
        type=float,
        default=DEFAULT_PATCHES.detail_gain,
        help="how much detail of the style's matched pixels is added at full size (0: none)",
    )
    p.add_argument(
        "--style-patch-tone",
        type=float,
        default=DEFAULT_PATCHES.tone,
        help="how strongly a patch's match also follows the photo's light and dark there (0: structure alone)",
    )
    p.add_argument(
        "--style-default-strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help="the strength the service paints at when a request gives none (0: the photo, 1: the full style)",
    )
    p.add_argument("--out", type=Path, default=Path("exports"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.style_shading_radius < 0:
        print(f"error: --style-shading-radius must be 0 or more, not {args.style_shading_radius}", file=sys.stderr)
        return 2
    if not 0 < args.style_conv1_2_energy <= 1:
        print(f"error: --style-conv1-2-energy must be in (0, 1], not {args.style_conv1_2_energy}", file=sys.stderr)
        return 2
    for flag, value in (
        ("--style-patch-prior", args.style_patch_prior),
        ("--style-detail-gain", args.style_detail_gain),
        ("--style-patch-tone", args.style_patch_tone),
    ):
        if not 0 <= value <= 4:
            print(f"error: {flag} must be in [0, 4], not {value}", file=sys.stderr)
            return 2
    if not 0 <= args.style_default_strength <= 1:
        print(f"error: --style-default-strength must be in [0, 1], not {args.style_default_strength}", file=sys.stderr)
        return 2
    gan_run = None if args.no_gan else (args.gan_run or _latest(args.runs_root, "gan"))
    style_run = None if args.no_style else (args.style_run or _latest(args.runs_root, "style"))
    if args.styles_dir is not None and not args.styles_dir.is_dir():
        print(f"error: --styles-dir {args.styles_dir} is not a folder", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    try:
        manifest = export_all(
            gan_run,
            style_run,
            args.out,
            args.styles_dir,
            style_options={
                "transform": args.style_transform,
                "levels": args.style_levels.split(",") if args.style_levels else None,
                "coarse_scales": _scales(args.style_coarse_scales, "--style-coarse-scales", "16,8,4,2 or 1"),
                "fine_scales": _scales(args.style_fine_scales, "--style-fine-scales", "2 or 4,2", none=True),
                "shading_radius": args.style_shading_radius,
                "conv1_2_energy": args.style_conv1_2_energy,
                "patches": _patches(args),
                "default_strength": args.style_default_strength,
            },
        )
    except (ExportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out / 'manifest.json'}: "
        + ", ".join(f"{role} ({entry.path})" for role, entry in manifest.models.roles().items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
