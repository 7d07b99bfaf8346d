"""The style trainer's options: profiles, the command line, validation, and the rule for a
resumed run (``training/runs.py``'s, shared with the GAN trainer); a run's checkpoint, read for
``--resume`` and by the export."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.folders import find_images, readable
from training.runs import COMMAND_ONLY, Start, load_checkpoint, resumed_options, start_options
from training.style.levels import ENCODER_LAYERS, size_multiple
from training.vgg import SOURCES

PROFILES: dict[str, dict[str, Any]] = {
    # 2 idle CPU cores, hed-vgg16: decoders for relu2_1 at half width and relu1_1 at a quarter,
    # 0.11 s a step on the Xeon.
    # relu3_1 was measured and left out here: with the HED weights its features keep too little of
    # a photo's colour for a CPU-sized decoder (held-out PSNR 11.6 dB after 750 steps, every photo
    # turned green, against 20.4 dB at relu2_1), and the cascade through it was blotchier and
    # slower than relu2_1 -> relu1_1 (docs/style-transfer.md).
    "quick": {
        "encoder_layer": "relu2_1",
        "decoder_width": 0.5,
        # relu1_1's decoder runs on every pixel of the photo: a 1x1 entry into 16 channels styled more
        # and moved the photo less than 3x3 into 32 on the held-out pairs, in 0.74x the stylizer's time
        "fine_width": 0.25,
        "crop": 64,
        "batch_size": 8,
        "steps": 2500,
        "lr": 1e-3,
        "sample_every": 500,
        "checkpoint_every": 500,
        "log_every": 50,
        "workers": 1,
    },
    # a GPU (bf16 autocast on CUDA), relu4_1 down to relu1_1 at full width: 30.7 steps/s on an H200
    "full": {
        "encoder_layer": "relu4_1",
        "decoder_width": 1.0,
        "fine_width": 1.0,
        "crop": 256,
        "batch_size": 8,
        "steps": 30000,
        "lr": 1e-4,
        "sample_every": 1000,
        "checkpoint_every": 1000,
        "log_every": 100,
        "workers": 4,
    },
}
# Options a resumed run may change; every other option must match the run's own.
RESUMABLE_OVERRIDES = ("steps", "device", "sample_every", "checkpoint_every", "log_every", "workers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.style.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def prof(key: str) -> str:
        return f"(default: {PROFILES['quick'][key]} for --profile quick, {PROFILES['full'][key]} for full)"

    p.add_argument(
        "--profile", choices=sorted(PROFILES), default=None, help="preset of the options below (default: quick)"
    )
    p.add_argument(
        "--vgg",
        default=None,
        help="VGG weights: auto, imagenet-vgg19, hed-vgg16, random (tests only) or a "
        "torchvision state-dict path (default: auto)",
    )
    p.add_argument(
        "--encoder-layer",
        default=None,
        help=f"coarsest level, one of {', '.join(ENCODER_LAYERS)}; a decoder is trained for it "
        f"and every finer level {prof('encoder_layer')}",
    )
    p.add_argument(
        "--decoder-width",
        type=float,
        default=None,
        help=f"decoder channels relative to the VGG's {prof('decoder_width')}",
    )
    p.add_argument(
        "--fine-width",
        type=float,
        default=None,
        help="channels of the relu1_1 decoder (the full-size level, which starts with a 1x1 convolution) "
        f"relative to the VGG's {prof('fine_width')}",
    )
    p.add_argument("--steps", type=int, default=None, help=f"total optimiser steps {prof('steps')}")
    p.add_argument("--batch-size", type=int, default=None, help=f"crops per step {prof('batch_size')}")
    p.add_argument("--crop", type=int, default=None, help=f"training crop side in pixels {prof('crop')}")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate {prof('lr')}")
    p.add_argument(
        "--lr-decay", type=float, default=None, help="lr at step i = lr / (1 + lr_decay * i) (default: 5e-05)"
    )
    p.add_argument(
        "--feature-weight",
        type=float,
        default=None,
        help="weight of the feature loss beside the pixel loss (default: 1.0)",
    )
    p.add_argument(
        "--content-dir",
        type=Path,
        default=None,
        help="folder of training photos, recursive jpg/png/webp, e.g. a COCO download "
        "(default: the photos and textures bundled in scikit-image)",
    )
    p.add_argument("--runs-root", type=Path, default=None, help="runs folder (default: runs)")
    p.add_argument("--name", default=None, help="run name under <runs-root>/style (default: a timestamp)")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue this run from its checkpoint (default: start a new run)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the decoder init and data (default: 0)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument(
        "--sample-every",
        type=int,
        default=None,
        help=f"steps between sample sheets, 0 = only at the end {prof('sample_every')}",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help=f"steps between checkpoints, 0 = only at the end {prof('checkpoint_every')}",
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=None,
        help=f"steps between status lines and metrics records {prof('log_every')}",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"data loader processes, 0 = in the training process {prof('workers')}",
    )
    p.add_argument(
        "--sample-side", type=int, default=None, help="long side of sample-sheet images in pixels (default: 256)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate the options, print them resolved and exit without work"
    )
    return p


COMMON_DEFAULTS: dict[str, Any] = {
    "vgg": "auto",
    "lr_decay": 5e-5,
    "feature_weight": 1.0,
    "content_dir": None,
    "runs_root": "runs",
    "name": None,
    "seed": 0,
    "device": "auto",
    "sample_side": 256,
}


@dataclass(frozen=True)
class StyleOptions:
    """A run's resolved options: the common defaults', then the profile's, then the profile's name
    (the order of ``options.json``). The checkpoint holds ``to_dict()``."""

    vgg: str
    lr_decay: float
    feature_weight: float
    content_dir: str | None
    runs_root: str
    name: str | None
    seed: int
    device: str
    sample_side: int
    encoder_layer: str
    decoder_width: float
    fine_width: float
    crop: int
    batch_size: int
    steps: int
    lr: float
    sample_every: int
    checkpoint_every: int
    log_every: int
    workers: int
    profile: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options set on the command line (not None), paths as strings."""
    out = {k: v for k, v in vars(args).items() if k not in COMMAND_ONLY and v is not None}
    return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def resolve_new(args: argparse.Namespace) -> StyleOptions:
    """Profile defaults, then common defaults, then what was given; validated."""
    given = given_options(args)
    profile = given.get("profile") or "quick"
    return validated(StyleOptions(**{**COMMON_DEFAULTS, **PROFILES[profile], **given, "profile": profile}))


def resumed(checkpoint: dict[str, Any], given: dict[str, Any]) -> StyleOptions:
    """A resumed run's options: its own, with those in ``RESUMABLE_OVERRIDES`` taken from ``given``."""
    opt = resumed_options(checkpoint["options"], given, RESUMABLE_OVERRIDES)
    # a run from before --fine-width: its relu1_1 decoder has the decoder width (the
    # checkpoint's decoder_config, not this option, is what rebuilds the decoders)
    opt.setdefault("fine_width", opt["decoder_width"])
    return validated(StyleOptions(**opt))


def validated(opt: StyleOptions) -> StyleOptions:
    """``opt``, or a ValueError with a clear message for any invalid option (before any work)."""
    if opt.encoder_layer not in ENCODER_LAYERS:
        raise ValueError(f"--encoder-layer must be one of {', '.join(ENCODER_LAYERS)}, not {opt.encoder_layer!r}")
    m = size_multiple(opt.encoder_layer)
    low = max(16, 4 * m)
    if opt.crop < low or opt.crop % m:
        raise ValueError(f"--crop {opt.crop}: must be >= {low} and a multiple of {m} for {opt.encoder_layer}")
    for key in ("steps", "batch_size", "log_every", "sample_side"):
        if getattr(opt, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, not {getattr(opt, key)}")
    for key in ("decoder_width", "fine_width"):
        if not (0 < getattr(opt, key) <= 2):
            raise ValueError(f"--{key.replace('_', '-')} must be in (0, 2], not {getattr(opt, key)}")
    for key in ("sample_every", "checkpoint_every", "workers", "lr_decay", "feature_weight"):
        value = getattr(opt, key)
        if not value >= 0 or not math.isfinite(value):
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, not {value}")
    if not (opt.lr > 0 and math.isfinite(opt.lr)):
        raise ValueError(f"--lr must be > 0, not {opt.lr}")
    if opt.vgg not in SOURCES and not Path(opt.vgg).expanduser().is_file():
        raise ValueError(f"--vgg {opt.vgg!r}: neither one of {', '.join(SOURCES)} nor a file")
    if opt.content_dir is not None:
        files = find_images(Path(opt.content_dir))
        if not files:
            raise ValueError(f"--content-dir {opt.content_dir}: no jpg/png/webp images found")
        if not any(readable(f) for f in files):  # stops at the first readable one
            raise ValueError(f"--content-dir {opt.content_dir}: none of its {len(files)} image files is readable")
    if opt.device != "auto" and opt.device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], not {opt.device!r}")
    return opt


def start(argv: list[str] | None) -> Start[StyleOptions]:
    """Parse and validate a new run's or a resumed run's options; exits 2 on bad input."""
    return start_options(build_parser(), argv, new=resolve_new, resumed=resumed, load=load_style_checkpoint)


def load_style_checkpoint(path: Path) -> dict[str, Any]:
    """A run's checkpoint; a checkpoint of the earlier AdaIN trainer (one ``decoder``, no
    ``decoders``) is refused with a ValueError that says what to do."""
    ckpt = load_checkpoint(path)
    if "decoders" not in ckpt:
        raise ValueError(
            f"{path} was written by the earlier AdaIN trainer, whose decoder this version "
            "cannot use: train a new run (make train-style)"
        )
    return ckpt
