"""The GAN trainer's options: profiles, seeds, the command line, validation, the rule for a resumed
run (``training/runs.py``'s, shared with the style trainer) and a run's options as its checkpoint
holds them, read for ``--resume`` and by the export."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from training.gan.data import DatasetSplit, parse_dataset_spec
from training.gan.functions import AUGMENTS, LOSSES, diff_augment
from training.gan.model import SUPPORTED_SIZES, Discriminator, Generator
from training.runs import resumed_options

# Schedules per profile: `quick` fits a 2-core CPU in under 10 minutes on MNIST, `full` is for a GPU.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "epochs": 64,
        "g_channels": 32,
        "d_channels": 32,
        "batch_size": 64,
        "classifier_epochs": 5,
        "ema_decay": 0.99,
        "r1": 0.03,
        "aux_classifier": 0.5,
        "lr_decay": 0.25,
        "eval_sets": 10,
    },
    "full": {
        "epochs": 60,
        "g_channels": 64,
        "d_channels": 64,
        "batch_size": 128,
        "classifier_epochs": 8,
        "ema_decay": 0.999,
        # R1 and the class head were chosen on the quick profile's MNIST (docs/gan.md); their
        # weights for 64 px folders on a GPU are unmeasured, so the full profile leaves them off.
        "r1": 0.0,
        "aux_classifier": 0.0,
        "lr_decay": 0.0,
        "eval_sets": 10,
    },
}
# The evaluation classifier's seed, the same for every run: runs of different --seed are then
# measured in one feature space (docs/gan.md, "Ablation of the stability tricks").
CLASSIFIER_SEED = 0
# The independent evaluation space's: its split of the same images (``data.SPLIT_SEED`` is the
# training split's) and its classifier's seed.
JUDGE_SPLIT_SEED = 20251207
JUDGE_SEED = 1
# The first latent seeds of the evaluation samples and of the BatchNorm calibration's latents.
EVAL_SEED = 1_000_000
CALIBRATION_SEED = 2_000_000
# Batches of latents the EMA generator's BatchNorm statistics are estimated from before each epoch's
# samples and measures (the end uses --calibration-latents: docs/gan.md, "BatchNorm statistics").
EPOCH_CALIBRATION_BATCHES = 16
# Options a resumed run may change; any other option given must match the run's own (or it is refused).
RESUMABLE_OVERRIDES = ("epochs", "device", "precision", "eval_sets", "calibration_latents")
# Options added since runs were first made, at the value that does what a run from before did: a
# checkpoint without them (read by --resume and by the export) gets these. The calibration changes no
# training, so a run from before it existed gets today's default when it is resumed or measured again.
ADDED_OPTIONS: dict[str, Any] = {
    "aux_classifier": 0.0,
    "calibration_latents": 65_536,
    "eval_sets": 1,
    "lr_decay": 0.0,
    "precision": "fp32",
    "r1": 0.0,
    "r1_every": 16,
}
PRECISIONS = ("auto", "fp32", "bf16")
# The counts that must be at least 1, and those of them --resume may change.
COUNTS = (
    "latent_dim",
    "g_channels",
    "d_channels",
    "batch_size",
    "epochs",
    "classifier_epochs",
    "eval_sets",
    "calibration_latents",
)
RESUMED_COUNTS = ("epochs", "eval_sets", "calibration_latents")
# What the data and the run decide, after the command line (and --dry-run) has been read.
DECIDED_LATER = (
    "num_classes",
    "class_names",
    "train_images",
    "held_out_images",
    "run_dir",
    "classifier_held_out_accuracy",
)


@dataclass(frozen=True)
class GanOptions:
    """A run's resolved options, in the order of the command line, then what the data decides
    (``with_data``), the run folder and the evaluation classifier's held-out accuracy. ``options.json``,
    the checkpoint and the export's manifest hold ``to_dict()``."""

    profile: str
    dataset: str
    image_size: int
    channels: int
    conditional: str | bool  # auto | yes | no until the data decides, then a bool
    latent_dim: int
    g_channels: int
    d_channels: int
    upsample: str
    loss: str
    lr_g: float
    lr_d: float
    lr_decay: float
    beta1: float
    label_smoothing: float
    spectral_norm: bool
    mode_seeking: float
    aux_classifier: float
    r1: float
    r1_every: int
    minibatch_std: bool
    diffaugment: str  # auto until the data decides
    d_skip_below: float
    ema_decay: float
    batch_size: int
    epochs: int
    classifier_epochs: int
    eval_sets: int
    calibration_latents: int
    quality_vgg: str
    runs_root: str
    name: str | None
    resume: str | None
    seed: int
    device: str
    precision: str
    dry_run: bool
    num_classes: int = 0  # 0: unconditional
    class_names: list[str] | None = None
    train_images: int = 0
    held_out_images: int = 0
    run_dir: str | None = None
    classifier_held_out_accuracy: float | None = None  # kept once the run has measured it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["classifier_held_out_accuracy"] is None:  # absent until measured, as in every run's files
            del d["classifier_held_out_accuracy"]
        return d

    def command_line(self) -> dict[str, Any]:
        """The options the command line and the profile resolve, without what the data decides."""
        return {k: v for k, v in self.to_dict().items() if k not in DECIDED_LATER}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GanOptions:
        """Options as a run's files hold them; those added since it was made take ``ADDED_OPTIONS``."""
        values = {**ADDED_OPTIONS, **d}
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GAN option(s) {', '.join(sorted(unknown))}: a run of another version?")
        return cls(**values)


def stored_options(checkpoint: dict[str, Any]) -> GanOptions:
    """A run's options as its checkpoint holds them, with any option added since filled in."""
    return GanOptions.from_dict(json.loads(checkpoint["options"]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.gan.train",
        description="Train a DCGAN: ``python -m training.gan.train --dataset mnist --profile quick``.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--profile", choices=sorted(PROFILES), default="quick", help="schedule: quick (2-core CPU) or full (GPU)"
    )
    p.add_argument("--dataset", default="mnist", help="mnist | fake | folder:PATH")
    p.add_argument(
        "--image-size", type=int, default=None, help=f"one of {SUPPORTED_SIZES}; default 32 for mnist, 64 otherwise"
    )
    p.add_argument("--channels", type=int, default=None, choices=(1, 3), help="default 1 for mnist, 3 otherwise")
    p.add_argument(
        "--conditional",
        choices=("auto", "yes", "no"),
        default="auto",
        help="class-conditional when the data has labels",
    )
    p.add_argument("--latent-dim", type=int, default=100)
    p.add_argument("--g-channels", type=int, default=None, help="generator base width (profile default)")
    p.add_argument("--d-channels", type=int, default=None, help="discriminator base width (profile default)")
    p.add_argument(
        "--upsample",
        choices=("transposed", "nearest"),
        default=None,
        help="generator upsampling; default transposed up to 32 px, nearest above",
    )
    p.add_argument("--loss", choices=LOSSES, default="ns", help="non-saturating (ns) or hinge")
    p.add_argument("--lr-g", type=float, default=2e-4)
    p.add_argument("--lr-d", type=float, default=2e-4)
    p.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        help="both learning rates fall linearly towards 0 over this share of the last epochs, set at each "
        "epoch's start (0 = constant; profile default)",
    )
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--label-smoothing", type=float, default=0.1, help="one-sided: real target is 1 - this (ns loss)")
    p.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=False, help="spectral norm on D")
    p.add_argument(
        "--mode-seeking",
        type=float,
        default=1.0,
        help="weight of the mode-seeking term (pairs of latents per label must differ); 0 = off",
    )
    p.add_argument(
        "--aux-classifier",
        type=float,
        default=None,
        help="weight of an auxiliary class head on D (AC-GAN): D learns the real images' labels, G is "
        "pushed to draw what it reads as the requested label; 0 = off (profile default)",
    )
    p.add_argument(
        "--r1",
        type=float,
        default=None,
        help="weight gamma of the R1 penalty on D's gradient at the real images (gamma/2 |grad|^2); "
        "0 = off (profile default)",
    )
    p.add_argument(
        "--r1-every", type=int, default=16, help="apply R1 every this many steps, scaled up to match (lazy R1)"
    )
    p.add_argument(
        "--minibatch-std",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="minibatch standard-deviation feature in D, against mode collapse",
    )
    p.add_argument(
        "--diffaugment",
        default="auto",
        help=f"comma-separated subset of {','.join(AUGMENTS)}, 'none', or auto (color,translation under 2,000 images)",
    )
    p.add_argument(
        "--d-skip-below", type=float, default=0.1, help="skip the D update while its loss is below this (0 = never)"
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="EMA of the generator (the exported one): the most its decay ramps up to (profile default)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="profile default")
    p.add_argument("--epochs", type=int, default=None, help="profile default")
    p.add_argument(
        "--classifier-epochs", type=int, default=None, help="epochs of the evaluation classifier (profile default)"
    )
    p.add_argument(
        "--eval-sets",
        type=int,
        default=None,
        help="the final measures average this many disjoint sample sets of the held-out split's size "
        "(each epoch's log scores the first); profile default",
    )
    p.add_argument(
        "--calibration-latents",
        type=int,
        default=ADDED_OPTIONS["calibration_latents"],
        help="at the end, the exported EMA generator's BatchNorm statistics are estimated from this many "
        f"latents (rounded up to whole batches); each epoch's log uses {EPOCH_CALIBRATION_BATCHES} batches",
    )
    p.add_argument("--quality-vgg", default="auto", help="VGG weights for the generic feature space of unlabelled data")
    p.add_argument("--runs-root", type=Path, default=Path("runs"))
    p.add_argument("--name", default=None, help="run folder name (default: a timestamp)")
    p.add_argument("--resume", type=Path, default=None, help="continue this run folder from its last checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the forward passes in bfloat16 autocast (weights, optimiser and EMA stay float32): "
        "auto = bf16 on CUDA, fp32 elsewhere",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved options, then exit")
    return p


def uses_bf16(o: GanOptions, device: torch.device) -> bool:
    """Whether the run's forward passes autocast to bfloat16 on ``device`` (``--precision``)."""
    return o.precision == "bf16" or (o.precision == "auto" and device.type == "cuda")


def require_positive(o: GanOptions, keys: tuple[str, ...]) -> None:
    """ValueError naming the first of the counts ``keys`` that is below 1."""
    for key in keys:
        if getattr(o, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1")


def resolve_options(args: argparse.Namespace) -> GanOptions:
    """Fill profile and dataset defaults and validate everything before any work starts."""
    o = vars(args).copy()
    kind, path = parse_dataset_spec(o["dataset"])
    if kind == "folder" and not Path(path).is_dir():
        raise ValueError(f"--dataset {o['dataset']}: {path} is not a folder")
    for key, value in PROFILES[o["profile"]].items():
        if o.get(key) is None:
            o[key] = value
    o["image_size"] = o["image_size"] or (32 if kind in ("mnist", "fake") else 64)
    o["channels"] = o["channels"] or (1 if kind in ("mnist", "fake") else 3)
    o["upsample"] = o["upsample"] or ("transposed" if o["image_size"] <= 32 else "nearest")
    o["runs_root"] = str(o["runs_root"])
    o["resume"] = str(o["resume"]) if o["resume"] else None
    options = GanOptions(**o)
    validate(options, kind)
    return options


def validate(o: GanOptions, kind: str) -> None:
    """ValueError with a message that names the option, for the first invalid one."""
    if o.image_size not in SUPPORTED_SIZES:
        raise ValueError(f"--image-size must be one of {SUPPORTED_SIZES}")
    if kind == "mnist" and o.channels != 1:
        raise ValueError("--channels: mnist is grayscale (1 channel)")
    require_positive(o, COUNTS)
    for key in ("lr_g", "lr_d"):
        if not 0 < getattr(o, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be in (0, 1)")
    if not 0 <= o.lr_decay <= 1:
        raise ValueError("--lr-decay must be in [0, 1]")
    if not 0 <= o.label_smoothing < 0.5:
        raise ValueError("--label-smoothing must be in [0, 0.5)")
    if o.mode_seeking < 0:
        raise ValueError("--mode-seeking must be at least 0")
    if o.r1 < 0 or o.r1_every < 1:
        raise ValueError("--r1 must be at least 0 and --r1-every at least 1")
    if o.aux_classifier < 0:
        raise ValueError("--aux-classifier must be at least 0")
    if not 0 <= o.ema_decay < 1:
        raise ValueError("--ema-decay must be in [0, 1)")
    if o.diffaugment not in ("auto", "none"):
        diff_augment(torch.zeros(1, 1, 8, 8), o.diffaugment)  # raises on unknown names


def resumed(checkpoint: dict[str, Any], given: dict[str, Any]) -> GanOptions:
    """A resumed run's options: its own, with those in ``RESUMABLE_OVERRIDES`` taken from ``given``."""
    o = GanOptions.from_dict(resumed_options(stored_options(checkpoint).to_dict(), given, RESUMABLE_OVERRIDES))
    require_positive(o, RESUMED_COUNTS)
    return o


def with_data(o: GanOptions, data: DatasetSplit) -> GanOptions:
    """What the data decides: DiffAugment for ``auto``, conditional or not, the classes and the split's sizes."""
    n = len(data.train)
    diffaugment = o.diffaugment
    if diffaugment == "auto":
        diffaugment = "color,translation" if n < 2_000 else "none"
    conditional = {"auto": data.num_classes > 1, "yes": True, "no": False}.get(o.conditional, o.conditional)
    if conditional and data.num_classes < 2:
        raise ValueError(f"--conditional yes: dataset {o.dataset} has no class labels")
    if n < o.batch_size:
        raise ValueError(f"--batch-size {o.batch_size} is larger than the training split ({n} images)")
    return replace(
        o,
        diffaugment=diffaugment,
        conditional=conditional,
        num_classes=data.num_classes if conditional else 0,
        class_names=data.train.class_names if conditional else None,
        train_images=n,
        held_out_images=len(data.held_out),
    )


def build_models(o: GanOptions) -> tuple[Generator, Discriminator]:
    g = Generator(o.latent_dim, o.image_size, o.channels, o.g_channels, o.num_classes, upsample=o.upsample)
    d = Discriminator(
        o.image_size,
        o.channels,
        o.d_channels,
        o.num_classes,
        spectral=o.spectral_norm,
        minibatch_std=o.minibatch_std,
        aux_classifier=o.aux_classifier > 0,
    )
    return g, d
