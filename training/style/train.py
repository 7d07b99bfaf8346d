"""Train the reconstruction decoders of universal style transfer against a frozen VGG encoder.

    python -m training.style.train --profile quick            # 2 CPU cores, relu2_1 and relu1_1
    python -m training.style.train --profile full             # a GPU: relu4_1..relu1_1, 256 px
    python -m training.style.train --content-dir ~/coco       # your own photos (recursive)
    python -m training.style.train --resume runs/style/latest # continue a killed run exactly

One decoder per level (``--encoder-layer`` down to relu1_1) learns to turn that level's VGG
features back into the image: pixel MSE plus a feature loss at its own level (Li et al. 2017).
No style image is used: at serving time a closed-form transform gives the features any style's
mean and covariance, and the decoders invert them (see ``model.Cascade``).

The run folder ``runs/style/<name>`` holds options.json, metrics.jsonl, checkpoint.pt, a
content x style sample sheet (samples.png, and samples/step_NNNNNN.png; its second column is the
decoders' reconstruction) and losses.png. The data of step ``i`` is drawn from ``(seed, i)``
alone and the checkpoint holds the decoders, the optimiser and the step, so a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.imaging import save_png, to_uint8
from training.runs import (
    MetricsLog,
    atomic_write_json,
    load_checkpoint,
    new_run_dir,
    pick_device,
    plot_losses,
    resumed_options,
    save_checkpoint,
)
from training.style.data import (
    ImageSource,
    TrainingImages,
    bundled_style_images,
    content_source,
    find_images,
    load_fixed,
    pick_evenly,
)
from training.style.functions import content_loss, psnr
from training.style.model import ENCODER_LAYERS, Cascade, Decoder, StyleEncoder, levels_up_to, size_multiple
from training.vgg import SOURCES, VGGWeightsError, load_vgg

KIND = "style"
# What identifies a VGG: its weights and their input convention (not how deep it is cut).
VGG_IDENTITY = ("source", "arch", "weights_sha256", "normalization")
CHECKPOINT = "checkpoint.pt"
PROFILES: dict[str, dict[str, Any]] = {
    # 2 idle CPU cores, hed-vgg16: decoders for relu2_1 and relu1_1 at half width, ~0.26 s a step.
    # relu3_1 was measured and left out here: with the HED weights its features keep too little of
    # a photo's colour for a CPU-sized decoder (held-out PSNR 11.6 dB after 750 steps, every photo
    # turned green, against 20.4 dB at relu2_1), and the cascade through it was blotchier and
    # slower than relu2_1 -> relu1_1 (docs/style-transfer.md).
    "quick": {
        "encoder_layer": "relu2_1",
        "decoder_width": 0.5,
        "crop": 64,
        "batch_size": 8,
        "steps": 2500,
        "lr": 1e-3,
        "sample_every": 500,
        "checkpoint_every": 500,
        "log_every": 50,
        "workers": 1,
    },
    # a GPU (bf16 autocast on CUDA), relu4_1 down to relu1_1 at full width; not yet timed on one
    "full": {
        "encoder_layer": "relu4_1",
        "decoder_width": 1.0,
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
RESUME_OVERRIDABLE = ("steps", "device", "sample_every", "checkpoint_every", "log_every", "workers")
FIXED_CONTENT = ("chelsea", "astronaut", "coffee")
FIXED_STYLE = ("immunohistochemistry", "hubble_deep_field", "brick")
SHEET_SIZE = 3


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
OPTION_KEYS = ("profile", *PROFILES["quick"], *COMMON_DEFAULTS)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options set on the command line (not None), paths as strings."""
    out = {k: getattr(args, k) for k in OPTION_KEYS if getattr(args, k) is not None}
    return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def resolve_new(given: dict[str, Any]) -> dict[str, Any]:
    """Profile defaults, then common defaults, then what was given."""
    profile = given.get("profile") or "quick"
    return {**COMMON_DEFAULTS, **PROFILES[profile], **given, "profile": profile}


def validate(opt: dict[str, Any]) -> None:
    """Raise ValueError with a clear message for any invalid option (before any work)."""
    if opt["encoder_layer"] not in ENCODER_LAYERS:
        raise ValueError(f"--encoder-layer must be one of {', '.join(ENCODER_LAYERS)}, not {opt['encoder_layer']!r}")
    m = size_multiple(opt["encoder_layer"])
    low = max(16, 4 * m)
    if opt["crop"] < low or opt["crop"] % m:
        raise ValueError(f"--crop {opt['crop']}: must be >= {low} and a multiple of {m} for {opt['encoder_layer']}")
    positive = ("steps", "batch_size", "log_every", "sample_side")
    for key in positive:
        if opt[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, not {opt[key]}")
    if not (0 < opt["decoder_width"] <= 2):
        raise ValueError(f"--decoder-width must be in (0, 2], not {opt['decoder_width']}")
    for key in ("sample_every", "checkpoint_every", "workers", "lr_decay", "feature_weight"):
        if not opt[key] >= 0 or not math.isfinite(opt[key]):
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, not {opt[key]}")
    if not (opt["lr"] > 0 and math.isfinite(opt["lr"])):
        raise ValueError(f"--lr must be > 0, not {opt['lr']}")
    if opt["vgg"] not in SOURCES and not Path(opt["vgg"]).expanduser().is_file():
        raise ValueError(f"--vgg {opt['vgg']!r}: neither one of {', '.join(SOURCES)} nor a file")
    if opt["content_dir"] is not None and not find_images(Path(opt["content_dir"])):
        raise ValueError(f"--content-dir {opt['content_dir']}: no jpg/png/webp images found")
    if opt["device"] != "auto" and opt["device"].split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], not {opt['device']!r}")


def resolve_options(argv: list[str] | None) -> tuple[dict[str, Any], Path | None, bool]:
    """Parse and validate; returns (options, resume run dir or None, dry_run). Exits 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = given_options(args)
    try:
        if args.resume is not None:
            ckpt = args.resume / CHECKPOINT
            if not ckpt.is_file():
                raise ValueError(f"--resume {args.resume}: no {CHECKPOINT} there")
            opt = resumed_options(load_style_checkpoint(ckpt)["options"], given, RESUME_OVERRIDABLE)
        else:
            opt = resolve_new(given)
        validate(opt)
    except ValueError as e:
        parser.error(str(e))
    return opt, args.resume, args.dry_run


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


# ----------------------------------------------------------------------------- encoder


def load_encoder(opt: dict[str, Any], expected: dict[str, Any] | None, log: Callable[[str], None]):
    """The frozen VGG up to the encoder layer, and its info; ``expected``: a checkpoint's VGG info."""
    if expected is None:
        vgg, info = load_vgg(opt["vgg"], last_layer=opt["encoder_layer"], log=log)
    else:
        vgg, info = load_vgg(recorded_source(expected), arch=expected["arch"], last_layer=opt["encoder_layer"], log=log)
        check_same_vgg(expected, info)
    log(
        f"vgg source: {info['source']} ({info['arch']}, weights {info['weights'] or 'random'}, "
        f"sha256 {info['weights_sha256']})"
    )
    return vgg, info


def recorded_source(info: dict[str, Any]) -> str:
    """The ``load_vgg`` source that reproduces a recorded VGG info dict."""
    return info["weights"] if info["source"] == "file" else info["source"]


class VGGMismatchError(RuntimeError):
    """The VGG at hand is not the one the decoder was trained against."""


def check_same_vgg(
    expected: dict[str, Any], got: dict[str, Any], keys: tuple[str, ...] = (*VGG_IDENTITY, "last_layer")
) -> None:
    """A decoder is only valid with the encoder it was trained against: refuse any other.
    ``keys``: what must match; by default the weights and the depth the decoder reads."""
    for key in keys:
        if expected.get(key) != got.get(key):
            raise VGGMismatchError(
                f"VGG mismatch: {key} is {got.get(key)!r} but the decoder was "
                f"trained with {expected.get(key)!r}; refusing to use it"
            )


# ----------------------------------------------------------------------------- training step


def compute_losses(vgg: nn.Module, decoders: nn.ModuleDict, images: Tensor, feature_weight: float) -> dict[str, Tensor]:
    """Reconstruction losses of every level's decoder on ``images`` (N, 3, H, W) in [0, 1].

    Per level: MSE of the pixels + ``feature_weight`` x MSE of the level's features (scaled by the
    decoder's ``input_scale`` squared, so every level's feature term is of unit scale). Also the
    PSNR of each reconstruction (dB, a batch mean, no gradient).
    """
    levels = list(decoders)
    with torch.no_grad():
        targets = vgg(images, levels)
    out: dict[str, Tensor] = {}
    total = None
    for level in levels:
        decoder = decoders[level]
        recon = decoder(targets[level])
        pixel = content_loss(recon.float(), images.float())
        feat = vgg(recon, [level])[level]
        feature = content_loss(feat.float(), targets[level].float()) * decoder.input_scale**2
        loss = pixel + feature_weight * feature
        total = loss if total is None else total + loss
        out[f"pixel_{level}"], out[f"feature_{level}"] = pixel, feature
        out[f"psnr_{level}"] = psnr(recon.detach().clamp(0, 1), images).mean()
    out["loss"] = total
    return out


def lr_at(opt: dict[str, Any], step: int) -> float:
    return opt["lr"] / (1.0 + opt["lr_decay"] * step)


def train_step(vgg, decoders, optimizer, images, opt, step, autocast) -> dict[str, float]:
    """One Adam step on a batch of images; returns the losses as floats."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(opt, step)
    with autocast():
        losses = compute_losses(vgg, decoders, images, opt["feature_weight"])
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


# ----------------------------------------------------------------------------- samples


def fixed_samples(opt: dict[str, Any], vgg: nn.Module, device: torch.device):
    """Fixed content pictures and style statistics for the sample sheet (computed once)."""
    layer, side = opt["encoder_layer"], opt["sample_side"]
    contents = content_source(opt["content_dir"] and Path(opt["content_dir"]))
    styles = ImageSource.from_arrays(bundled_style_images())
    m = size_multiple(layer)
    content_imgs = load_fixed(contents, pick_evenly(contents, SHEET_SIZE, FIXED_CONTENT), side, m)
    style_imgs = load_fixed(styles, pick_evenly(styles, SHEET_SIZE, FIXED_STYLE), side, m)
    levels = levels_up_to(layer)
    with torch.no_grad():
        encoder = StyleEncoder(vgg, levels)
        style_stats = [list(encoder(s.to(device))) for s in style_imgs]
    return {"content": content_imgs, "style": style_imgs, "style_stats": style_stats}


def render_sheet(cascade: nn.Module, fixed: dict[str, Any], cell: int) -> Tensor:
    """(3, (1+k)*cell, (2+k)*cell) in [0,1]: style images on the top row, content on the left
    column, then the decoders' reconstruction (strength 0), then one column per style."""
    rows = [[_blank(cell), _blank(cell)] + [_fit(s[0], cell) for s in fixed["style"]]]
    with torch.no_grad():
        for img in fixed["content"]:
            x = img.to(fixed["style_stats"][0][0].device)
            zero, one = torch.zeros(1, device=x.device), torch.ones(1, device=x.device)
            row = [_fit(img[0], cell), _fit(cascade(x, zero, *fixed["style_stats"][0])[0], cell)]
            for stats in fixed["style_stats"]:
                row.append(_fit(cascade(x, one, *stats)[0].float().cpu(), cell))
            rows.append(row)
    return torch.cat([torch.cat(r, dim=2) for r in rows], dim=1)


def _fit(img: Tensor, cell: int) -> Tensor:
    """(3, h, w) -> (3, cell, cell): scaled to fit, centred on white."""
    h, w = img.shape[-2:]
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = torch.nn.functional.interpolate(
        img[None].cpu(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )[0]
    out = torch.ones(3, cell, cell)
    top, left = (cell - nh) // 2, (cell - nw) // 2
    out[:, top : top + nh, left : left + nw] = img.clamp(0, 1)
    return out


def _blank(cell: int) -> Tensor:
    return torch.ones(3, cell, cell)


def write_samples(run_dir: Path, step: int, cascade: nn.Module, fixed: dict[str, Any], cell: int) -> None:
    was_training = cascade.training
    cascade.eval()
    sheet = render_sheet(cascade, fixed, cell)
    cascade.train(was_training)
    pixels = to_uint8(sheet[None], value_range=(0.0, 1.0))[0]
    save_png(pixels, run_dir / "samples" / f"step_{step:06d}.png")
    save_png(pixels, run_dir / "samples.png")


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything a training run carries between steps."""

    opt: dict[str, Any]
    run_dir: Path
    device: torch.device
    vgg: nn.Module
    vgg_info: dict[str, Any]
    decoders: nn.ModuleDict  # level -> Decoder, coarse to fine
    optimizer: torch.optim.Optimizer
    metrics: MetricsLog
    step: int = 0
    train_seconds: float = 0.0


def new_decoders(
    levels: list[str], width: float, seed: int, input_scales: dict[str, float] | None = None
) -> nn.ModuleDict:
    """The decoders of ``levels``, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.ModuleDict(
            {level: Decoder(level, width, input_scale=(input_scales or {}).get(level, 1.0)) for level in levels}
        )


def feature_input_scales(vgg: nn.Module, levels: list[str], batches: list[Tensor]) -> dict[str, float]:
    """1 / RMS of each level's features over ``batches``: the decoders' unit-scale input factors."""
    with torch.no_grad():
        feats = [vgg(b, levels) for b in batches]
    return {
        level: float(1.0 / torch.stack([f[level].float().pow(2).mean() for f in feats]).mean().sqrt().clamp_min(1e-12))
        for level in levels
    }


def start_run(
    opt: dict[str, Any], run_dir: Path, device: torch.device, resume: dict | None, log: Callable[[str], None]
) -> Run:
    """Load the VGG, build (or restore) the decoder and optimiser, write options.json."""
    vgg, vgg_info = load_encoder(opt, resume and resume["vgg"], log)
    vgg = vgg.to(device)
    levels = levels_up_to(opt["encoder_layer"])
    scales = None  # resumed decoders restore their own from the checkpoint
    if resume is None:
        images = make_images(opt)
        scales = feature_input_scales(vgg, levels, [images[i].to(device) for i in range(4)])
        log("decoder input scales (1 / RMS of the features): " + ", ".join(f"{k} {v:.4g}" for k, v in scales.items()))
    decoders = new_decoders(levels, opt["decoder_width"], opt["seed"], scales).to(device)
    run = Run(
        opt,
        run_dir,
        device,
        vgg,
        vgg_info,
        decoders,
        torch.optim.Adam(decoders.parameters(), lr=opt["lr"]),
        MetricsLog(run_dir / "metrics.jsonl"),
    )
    if resume is not None:
        decoders.load_state_dict(resume["decoders"])
        run.optimizer.load_state_dict(resume["optimizer"])
        run.step, run.train_seconds = resume["step"], resume.get("train_seconds", 0.0)
        torch.set_rng_state(resume["rng"]["torch"])
        if "cuda" in resume["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
        log(f"resuming {run_dir} from step {run.step}")
    run.metrics.truncate_after(run.step)
    atomic_write_json(
        run_dir / "options.json", {**opt, "vgg_info": vgg_info, "device_used": str(device), "torch": torch.__version__}
    )
    return run


def save_run(run: Run) -> None:
    """Atomic checkpoint: CPU decoders and optimiser state, step, RNG states, options, VGG info."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_checkpoint(
        run.run_dir / CHECKPOINT,
        {
            "decoders": run.decoders.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "step": run.step,
            "rng": rng,
            "options": run.opt,
            "vgg": run.vgg_info,
            "train_seconds": run.train_seconds,
            "decoder_config": {"levels": list(run.decoders), "width": run.opt["decoder_width"]},
        },
    )


def make_images(opt: dict[str, Any]) -> TrainingImages:
    return TrainingImages(
        content_source(opt["content_dir"] and Path(opt["content_dir"])),
        crop=opt["crop"],
        batch_size=opt["batch_size"],
        seed=opt["seed"],
    )


def make_loader(opt: dict[str, Any], start: int, pin_memory: bool = False):
    """Batches of steps ``start .. steps-1`` (see ``TrainingImages``), in worker processes if asked."""
    from torch.utils.data import DataLoader

    workers = opt["workers"]
    return DataLoader(
        make_images(opt),
        batch_size=None,
        sampler=range(start, opt["steps"]),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        pin_memory=pin_memory,
    )


def status_line(step: int, total: int, rec: dict[str, Any]) -> str:
    psnrs = "  ".join(f"{k[5:]} {v:5.2f} dB" for k, v in rec.items() if k.startswith("psnr_"))
    return (
        f"step {step:>7d}/{total}  loss {rec['loss']:9.5f}  {psnrs}  lr {rec['lr']:.2e}  "
        f"{rec['steps_per_s']:6.2f} steps/s"
    )


def train_loop(run: Run, log: Callable[[str], None]) -> dict[str, Any]:
    """Steps up to ``opt['steps']`` with metrics, samples and checkpoints; returns the last record."""
    from tqdm import tqdm

    opt, device = run.opt, run.device
    fixed = fixed_samples(opt, run.vgg, device)
    cascade = Cascade(run.vgg, list(run.decoders.values()))
    use_bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    run.decoders.train()
    window: list[dict[str, float]] = []
    last: dict[str, Any] = {"step": run.step}
    t_window = time.perf_counter()
    bar = tqdm(
        total=opt["steps"],
        initial=run.step,
        desc="style",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
    )
    try:
        for images in make_loader(opt, run.step, pin_memory=device.type == "cuda"):
            t0 = time.perf_counter()
            images = images.to(device, non_blocking=True)
            window.append(train_step(run.vgg, run.decoders, run.optimizer, images, opt, run.step, autocast))
            run.train_seconds += time.perf_counter() - t0
            run.step += 1
            bar.update(1)
            if _due(run.step, opt["log_every"], opt["steps"]):
                now = time.perf_counter()
                last = log_record(run.step, window, now - t_window, lr_at(opt, run.step - 1), run.train_seconds)
                run.metrics.append(last)
                bar.write(status_line(run.step, opt["steps"], last))
                window, t_window = [], now
            if _due(run.step, opt["sample_every"], opt["steps"]):
                write_samples(run.run_dir, run.step, cascade, fixed, opt["sample_side"])
                plot_losses(
                    run.metrics.read(),
                    ["loss", *(f"pixel_{k}" for k in run.decoders)],
                    run.run_dir / "losses.png",
                    f"reconstruction decoders ({', '.join(run.decoders)}, {run.vgg_info['source']})",
                )
            if _due(run.step, opt["checkpoint_every"], opt["steps"]):
                save_run(run)
    except KeyboardInterrupt:
        bar.close()
        log(f"interrupted at step {run.step}; continue from the last checkpoint with --resume {run.run_dir}")
        raise SystemExit(130) from None
    bar.close()
    return {**last, "train_seconds": run.train_seconds}


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def log_record(
    step: int, window: list[dict[str, float]], seconds: float, lr: float, train_seconds: float
) -> dict[str, Any]:
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    return {
        "step": step,
        **mean,
        "lr": lr,
        "steps_per_s": len(window) / max(seconds, 1e-9),
        "train_seconds": round(train_seconds, 3),
        "time": time.time(),
    }


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    opt, resume_dir, dry_run = resolve_options(argv)
    if dry_run:
        log(json.dumps({**opt, "resume": str(resume_dir) if resume_dir else None}, indent=2))
        return 0
    device = pick_device(opt["device"])
    if resume_dir is not None:
        run_dir, resume = resume_dir, load_style_checkpoint(resume_dir / CHECKPOINT)
        if resume["step"] >= opt["steps"]:
            log(f"{run_dir} is already at step {resume['step']} >= --steps {opt['steps']}; nothing to do")
            return 0
    else:
        run_dir, resume = new_run_dir(Path(opt["runs_root"]), KIND, opt["name"]), None
    log(f"run folder: {run_dir}  device: {device}")
    t0 = time.perf_counter()
    try:
        last = train_loop(start_run(opt, run_dir, device, resume, log), log)
    except (VGGMismatchError, VGGWeightsError) as e:
        log(f"error: {e}")
        return 1
    log(
        f"done: {run_dir} step {last['step']} in {time.perf_counter() - t0:.1f} s "
        f"(training {last['train_seconds']:.1f} s); sample sheet {run_dir / 'samples.png'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
