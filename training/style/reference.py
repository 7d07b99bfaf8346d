"""The command line of the optimisation reference (the optimiser itself: ``gatys.py``).

    python -m training.style.reference --content photo.jpg --style art.png --output out.png

writes the image and a JSON of settings, losses and timing beside it; ``--help`` lists the flags.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from training.imaging import OUTPUT_FORMATS, load_image, save_image
from training.runs import atomic_write_json, pick_device
from training.style.gatys import (
    DEFAULT_LR,
    INITS,
    LOSS_KEYS,
    OPTIMIZERS,
    ReferenceSettings,
    deepest_layer,
    stylize_by_optimisation,
)
from training.vgg import SOURCES, VGGWeightsError, load_vgg

MIN_SIZE, MAX_SIZE = 16, 4096
DEFAULT_SIZE = 384


def build_parser() -> argparse.ArgumentParser:
    d = ReferenceSettings()
    p = argparse.ArgumentParser(
        prog="python -m training.style.reference",
        description="Style transfer by optimisation (Gatys et al.), the quality reference. "
        "Writes the image and a JSON of settings, losses and timing beside it.",
    )
    p.add_argument("--content", type=Path, required=True, help="content photo")
    p.add_argument("--style", type=Path, required=True, help="style image")
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        help="result image (.png, .jpg, .webp); a .json of the same name goes beside it",
    )
    p.add_argument(
        "--vgg",
        default="auto",
        help=f"VGG weights: one of {', '.join(SOURCES)} ('random' is for tests only) "
        "or a torchvision state-dict path (default: auto)",
    )
    p.add_argument(
        "--content-layer", default=d.content_layer, help=f"deep layer of the content loss (default: {d.content_layer})"
    )
    p.add_argument(
        "--style-layers",
        default=",".join(d.style_layers),
        help=f"comma-separated layers of the Gram-matrix style loss (default: {','.join(d.style_layers)})",
    )
    p.add_argument(
        "--content-weight",
        type=float,
        default=d.content_weight,
        help=f"weight of the content loss, a relative MSE (default: {d.content_weight})",
    )
    p.add_argument(
        "--style-weight",
        type=float,
        default=d.style_weight,
        help=f"weight of the style loss, the mean relative Gram MSE over the layers (default: {d.style_weight})",
    )
    p.add_argument(
        "--tv-weight",
        type=float,
        default=d.tv_weight,
        help=f"weight of the total-variation smoothness loss (default: {d.tv_weight})",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"optimiser (default: {d.optimizer})")
    p.add_argument(
        "--steps",
        type=int,
        default=d.steps,
        help=f"optimiser steps, one VGG forward+backward each (default: {d.steps})",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: " + ", ".join(f"{v} for {k}" for k, v in DEFAULT_LR.items()) + ")",
    )
    p.add_argument("--init", choices=INITS, default=d.init, help=f"starting image (default: {d.init})")
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"long side of the output in pixels, aspect ratio kept "
        f"(default: {DEFAULT_SIZE}; 256 takes roughly 1 s a step on 2 CPU cores)",
    )
    p.add_argument(
        "--style-size", type=int, default=None, help="long side the style image is resized to (default: --size)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the --init noise image (default: {d.seed})")
    p.add_argument(
        "--log-every", type=int, default=d.log_every, help=f"record the losses every N steps (default: {d.log_every})"
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: auto)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate the flags and read the images, then stop before any VGG work"
    )
    return p


def settings_from_args(args: argparse.Namespace) -> ReferenceSettings:
    layers = tuple(x.strip() for x in args.style_layers.split(",") if x.strip())
    return ReferenceSettings(
        content_layer=args.content_layer.strip(),
        style_layers=layers,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        optimizer=args.optimizer,
        steps=args.steps,
        lr=args.lr,
        init=args.init,
        seed=args.seed,
        log_every=args.log_every,
    )


def validate_args(args: argparse.Namespace) -> str | None:
    """The first problem with the command line (other than settings), or None."""
    for flag, path in (("--content", args.content), ("--style", args.style)):
        if not path.is_file():
            return f"{flag} {path}: no such file"
    if args.output.suffix.lower() not in OUTPUT_FORMATS:
        return f"--output {args.output}: suffix must be one of {sorted(OUTPUT_FORMATS)}"
    if args.output.exists() and args.output.is_dir():
        return f"--output {args.output} is a directory"
    for flag, size in (("--size", args.size), ("--style-size", args.style_size)):
        if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
            return f"{flag} must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}"
    if args.vgg not in SOURCES and not Path(args.vgg).expanduser().is_file():
        return f"--vgg {args.vgg!r}: not one of {', '.join(SOURCES)} and not a file"
    if args.device != "auto":
        try:
            torch.device(args.device)
        except RuntimeError as e:
            return f"--device {args.device!r}: {e}"
    return None


def _read_images(args) -> tuple[Tensor, Tensor]:
    try:
        content = load_image(args.content, args.size)
        style = load_image(args.style, args.style_size or args.size)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read image: {e}") from e
    return content, style


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, ReferenceSettings]:
    """Parse and validate the command line; exits with status 2 and a message on a bad flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    problem = validate_args(args)
    try:
        settings.validate()
    except ValueError as e:
        problem = problem or str(e)
    if problem:
        parser.error(problem)
    return args, settings


def result_record(
    args,
    settings: ReferenceSettings,
    info: dict,
    device: torch.device,
    shapes: dict[str, list[int]],
    seconds: float,
    history: list[dict],
) -> dict:
    """The JSON written beside the output image."""
    return {
        "content": str(args.content),
        "style": str(args.style),
        "output": str(args.output),
        **shapes,
        "settings": settings.to_json(),
        "vgg": info,
        "device": str(device),
        "time_s": round(seconds, 3),
        "seconds_per_step": round(seconds / settings.steps, 4),
        "final": {k: history[-1][k] for k in LOSS_KEYS},
        "history": history,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = parse_args(argv)
    device = pick_device(args.device)
    content, style = _read_images(args)
    print(
        f"content {tuple(content.shape[2:])} style {tuple(style.shape[2:])} settings {json.dumps(settings.to_json())}"
    )
    if args.dry_run:
        print("dry run: flags and images are valid; no VGG work done")
        return 0

    try:
        vgg, info = load_vgg(args.vgg, last_layer=deepest_layer(settings.taps))
    except VGGWeightsError as e:
        raise SystemExit(f"error: {e}") from e
    if info["random_weights"]:
        print("WARNING: random VGG weights: the result shows no real style transfer")
    start = time.perf_counter()
    image, history = stylize_by_optimisation(vgg.to(device), content.to(device), style.to(device), settings)
    seconds = time.perf_counter() - start

    save_image(image, args.output)
    shapes = {"output_size_hw": list(image.shape[2:]), "style_size_hw": list(style.shape[2:])}
    record = result_record(args, settings, info, device, shapes, seconds, history)
    atomic_write_json(args.output.with_suffix(".json"), record)
    print(
        f"wrote {args.output} ({seconds:.1f} s, {seconds / settings.steps:.3f} s/step); "
        f"final losses " + ", ".join(f"{k} {history[-1][k]:.4g}" for k in LOSS_KEYS)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
