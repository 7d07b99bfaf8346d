"""Train an AdaIN decoder (Huang & Belongie 2017) against a frozen VGG encoder.

    python -m training.style.train --profile quick            # 2 CPU cores, ~14 minutes
    python -m training.style.train --profile full             # a GPU: relu4_1, 256 px, 30k steps
    python -m training.style.train --resume runs/style/latest # continue a killed run exactly

The run folder ``runs/style/<name>`` holds options.json, metrics.jsonl, checkpoint.pt, a
content x style sample sheet (samples.png, and samples/step_NNNNNN.png) and losses.png.
The data of step ``i`` is drawn from ``(seed, i)`` alone and the checkpoint holds the decoder,
the optimiser and the step, so a resumed run reproduces an uninterrupted one.
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
from training.runs import (MetricsLog, atomic_write_json, load_checkpoint, new_run_dir, pick_device, plot_losses, save_checkpoint)
from training.style.data import (StylePairs, content_source, find_images, load_fixed, pick_evenly,
                                 style_source)
from training.style.functions import adain, content_loss, mean_std, style_loss_mean_std
from training.style.model import ENCODER_LAYERS, Decoder, Stylizer, size_multiple, style_layers
from training.vgg import SOURCES, VGGWeightsError, load_vgg

KIND = "style"
# What identifies a VGG: its weights and their input convention (not how deep it is cut).
VGG_IDENTITY = ("source", "arch", "weights_sha256", "normalization")
CHECKPOINT = "checkpoint.pt"
PROFILES: dict[str, dict[str, Any]] = {
    # 2 idle CPU cores, hed-vgg16: ~0.65 s a step; `make train-style` took 13 min 21 s in all
    # (README). At equal compute, 64 px x 8 trains faster than 128 px x 4 (twice the steps, twice
    # the styles per step); lr 1e-3 ~ 5e-4 > 2e-3.
    "quick": {"encoder_layer": "relu3_1", "crop": 64, "batch_size": 8, "steps": 1200, "lr": 1e-3,
              "style_weight": 10.0, "sample_every": 200, "checkpoint_every": 200,
              "log_every": 20, "workers": 1},
    # a GPU (bf16 autocast on CUDA); not yet timed on one
    "full": {"encoder_layer": "relu4_1", "crop": 256, "batch_size": 8, "steps": 30000, "lr": 1e-4,
             "style_weight": 10.0, "sample_every": 1000, "checkpoint_every": 1000,
             "log_every": 100, "workers": 4},
}
# Options a resumed run may change; every other option must match the run's own.
RESUME_OVERRIDABLE = ("steps", "device", "sample_every", "checkpoint_every", "log_every", "workers")
FIXED_CONTENT = ("chelsea", "astronaut", "coffee")
FIXED_STYLE = ("immunohistochemistry", "hubble_deep_field", "brick")
SHEET_SIZE = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.style.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    def prof(key: str) -> str:
        return f"(default: {PROFILES['quick'][key]} for --profile quick, {PROFILES['full'][key]} for full)"

    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="preset of the options below (default: quick)")
    p.add_argument("--vgg", default=None,
                   help="VGG weights: auto, imagenet-vgg19, hed-vgg16, random (tests only) or a "
                        "torchvision state-dict path (default: auto)")
    p.add_argument("--encoder-layer", default=None, help=f"one of {', '.join(ENCODER_LAYERS)} {prof('encoder_layer')}")
    p.add_argument("--steps", type=int, default=None, help=f"total optimiser steps {prof('steps')}")
    p.add_argument("--batch-size", type=int, default=None, help=f"pairs per step {prof('batch_size')}")
    p.add_argument("--crop", type=int, default=None, help=f"training crop side in pixels {prof('crop')}")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate {prof('lr')}")
    p.add_argument("--lr-decay", type=float, default=None,
                   help="lr at step i = lr / (1 + lr_decay * i) (default: 5e-05)")
    p.add_argument("--content-weight", type=float, default=None, help="content loss weight (default: 1.0)")
    p.add_argument("--style-weight", type=float, default=None, help=f"style loss weight {prof('style_weight')}")
    p.add_argument("--content-dir", type=Path, default=None,
                   help="folder of content photos, recursive jpg/png/webp (default: scikit-image photos)")
    p.add_argument("--style-dir", type=Path, default=None,
                   help="folder of style images, recursive jpg/png/webp (default: scikit-image textures)")
    p.add_argument("--runs-root", type=Path, default=None, help="runs folder (default: runs)")
    p.add_argument("--name", default=None, help="run name under <runs-root>/style (default: a timestamp)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue this run from its checkpoint (default: start a new run)")
    p.add_argument("--seed", type=int, default=None, help="seed of the decoder init and data (default: 0)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--sample-every", type=int, default=None,
                   help=f"steps between sample sheets, 0 = only at the end {prof('sample_every')}")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"steps between checkpoints, 0 = only at the end {prof('checkpoint_every')}")
    p.add_argument("--log-every", type=int, default=None,
                   help=f"steps between status lines and metrics records {prof('log_every')}")
    p.add_argument("--workers", type=int, default=None,
                   help=f"data loader processes, 0 = in the training process {prof('workers')}")
    p.add_argument("--sample-side", type=int, default=None,
                   help="long side of sample-sheet images in pixels (default: 256)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the options, print them resolved and exit without work")
    return p


COMMON_DEFAULTS: dict[str, Any] = {
    "vgg": "auto", "lr_decay": 5e-5, "content_weight": 1.0, "content_dir": None, "style_dir": None,
    "runs_root": "runs", "name": None, "seed": 0, "device": "auto", "sample_side": 256,
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


def resolve_resume(given: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The run's stored options, with the few options a resumed run may change."""
    for key, value in given.items():
        if key not in RESUME_OVERRIDABLE and key in stored and stored[key] != value:
            raise ValueError(f"--{key.replace('_', '-')} {value} differs from the run's "
                             f"{stored[key]!r}; a resumed run keeps its training options")
    return {**stored, **{k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}}


def validate(opt: dict[str, Any]) -> None:
    """Raise ValueError with a clear message for any invalid option (before any work)."""
    if opt["encoder_layer"] not in ENCODER_LAYERS:
        raise ValueError(f"--encoder-layer must be one of {', '.join(ENCODER_LAYERS)}, "
                         f"not {opt['encoder_layer']!r}")
    m = size_multiple(opt["encoder_layer"])
    low = max(16, 4 * m)
    if opt["crop"] < low or opt["crop"] % m:
        raise ValueError(f"--crop {opt['crop']}: must be >= {low} and a multiple of {m} "
                         f"for {opt['encoder_layer']}")
    positive = ("steps", "batch_size", "log_every", "sample_side")
    for key in positive:
        if opt[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, not {opt[key]}")
    for key in ("sample_every", "checkpoint_every", "workers", "lr_decay", "content_weight", "style_weight"):
        if not opt[key] >= 0 or not math.isfinite(opt[key]):
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, not {opt[key]}")
    if not (opt["lr"] > 0 and math.isfinite(opt["lr"])):
        raise ValueError(f"--lr must be > 0, not {opt['lr']}")
    if opt["vgg"] not in SOURCES and not Path(opt["vgg"]).expanduser().is_file():
        raise ValueError(f"--vgg {opt['vgg']!r}: neither one of {', '.join(SOURCES)} nor a file")
    for key in ("content_dir", "style_dir"):
        if opt[key] is not None and not find_images(Path(opt[key])):
            raise ValueError(f"--{key.replace('_', '-')} {opt[key]}: no jpg/png/webp images found")
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
            opt = resolve_resume(given, load_checkpoint(ckpt)["options"])
        else:
            opt = resolve_new(given)
        validate(opt)
    except ValueError as e:
        parser.error(str(e))
    return opt, args.resume, args.dry_run


# ----------------------------------------------------------------------------- encoder


def load_encoder(opt: dict[str, Any], expected: dict[str, Any] | None, log: Callable[[str], None]):
    """The frozen VGG up to the encoder layer, and its info; ``expected``: a checkpoint's VGG info."""
    if expected is None:
        vgg, info = load_vgg(opt["vgg"], last_layer=opt["encoder_layer"], log=log)
    else:
        vgg, info = load_vgg(recorded_source(expected), arch=expected["arch"],
                             last_layer=opt["encoder_layer"], log=log)
        check_same_vgg(expected, info)
    log(f"vgg source: {info['source']} ({info['arch']}, weights {info['weights'] or 'random'}, "
        f"sha256 {info['weights_sha256']})")
    return vgg, info


def recorded_source(info: dict[str, Any]) -> str:
    """The ``load_vgg`` source that reproduces a recorded VGG info dict."""
    return info["weights"] if info["source"] == "file" else info["source"]


class VGGMismatchError(RuntimeError):
    """The VGG at hand is not the one the decoder was trained against."""


def check_same_vgg(expected: dict[str, Any], got: dict[str, Any],
                   keys: tuple[str, ...] = (*VGG_IDENTITY, "last_layer")) -> None:
    """A decoder is only valid with the encoder it was trained against: refuse any other.
    ``keys``: what must match; by default the weights and the depth the decoder reads."""
    for key in keys:
        if expected.get(key) != got.get(key):
            raise VGGMismatchError(f"VGG mismatch: {key} is {got.get(key)!r} but the decoder was "
                                   f"trained with {expected.get(key)!r}; refusing to use it")


# ----------------------------------------------------------------------------- training step


def compute_losses(vgg: nn.Module, decoder: nn.Module, content: Tensor, style: Tensor,
                   layer: str, content_weight: float, style_weight: float) -> dict[str, Tensor]:
    """AdaIN losses: content at ``layer`` against the AdaIN target, style mean/std at relu1_1..layer."""
    taps = style_layers(layer)  # ends with ``layer``
    with torch.no_grad():
        style_feats = vgg(style, taps)
        target = adain(vgg(content)[layer], *mean_std(style_feats[layer]))
    out_feats = vgg(decoder(target), taps)
    lc = content_loss(out_feats[layer].float(), target.float())
    ls = style_loss_mean_std({k: v.float() for k, v in out_feats.items()},
                             {k: v.float() for k, v in style_feats.items()})
    return {"loss": content_weight * lc + style_weight * ls, "content": lc, "style": ls}


def lr_at(opt: dict[str, Any], step: int) -> float:
    return opt["lr"] / (1.0 + opt["lr_decay"] * step)


def train_step(vgg, decoder, optimizer, content, style, opt, step, autocast) -> dict[str, float]:
    """One Adam step on a (content, style) batch; returns the losses as floats."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(opt, step)
    with autocast():
        losses = compute_losses(vgg, decoder, content, style, opt["encoder_layer"],
                                opt["content_weight"], opt["style_weight"])
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


# ----------------------------------------------------------------------------- samples


def fixed_samples(opt: dict[str, Any], vgg: nn.Module, device: torch.device):
    """Fixed content features and style statistics for the sample sheet (computed once)."""
    layer, side = opt["encoder_layer"], opt["sample_side"]
    contents = content_source(opt["content_dir"] and Path(opt["content_dir"]))
    styles = style_source(opt["style_dir"] and Path(opt["style_dir"]))
    m = size_multiple(layer)
    content_imgs = load_fixed(contents, pick_evenly(contents, SHEET_SIZE, FIXED_CONTENT), side, m)
    style_imgs = load_fixed(styles, pick_evenly(styles, SHEET_SIZE, FIXED_STYLE), side, m)
    with torch.no_grad():
        content_feats = [vgg(c.to(device))[layer] for c in content_imgs]
        style_stats = [mean_std(vgg(s.to(device))[layer]) for s in style_imgs]
    return {"content": content_imgs, "style": style_imgs, "content_feats": content_feats,
            "style_stats": style_stats}


def render_sheet(stylizer: nn.Module, fixed: dict[str, Any], cell: int) -> Tensor:
    """(3, (1+k)*cell, (1+k)*cell) in [0,1]: style images on the top row, content on the left column."""
    rows = [[_blank(cell)] + [_fit(s[0], cell) for s in fixed["style"]]]
    with torch.no_grad():
        for img, feat in zip(fixed["content"], fixed["content_feats"]):
            row = [_fit(img[0], cell)]
            for mean, std in fixed["style_stats"]:
                out = stylizer(feat, mean, std, torch.ones(1, device=feat.device))
                row.append(_fit(out[0].float().cpu(), cell))
            rows.append(row)
    return torch.cat([torch.cat(r, dim=2) for r in rows], dim=1)


def _fit(img: Tensor, cell: int) -> Tensor:
    """(3, h, w) -> (3, cell, cell): scaled to fit, centred on white."""
    h, w = img.shape[-2:]
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = torch.nn.functional.interpolate(img[None].cpu(), size=(nh, nw), mode="bilinear",
                                          align_corners=False, antialias=True)[0]
    out = torch.ones(3, cell, cell)
    top, left = (cell - nh) // 2, (cell - nw) // 2
    out[:, top:top + nh, left:left + nw] = img.clamp(0, 1)
    return out


def _blank(cell: int) -> Tensor:
    return torch.ones(3, cell, cell)


def write_samples(run_dir: Path, step: int, stylizer: nn.Module, fixed: dict[str, Any], cell: int) -> None:
    was_training = stylizer.training
    stylizer.eval()
    sheet = render_sheet(stylizer, fixed, cell)
    stylizer.train(was_training)
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
    decoder: Decoder
    optimizer: torch.optim.Optimizer
    metrics: MetricsLog
    step: int = 0
    train_seconds: float = 0.0


def new_decoder(layer: str, seed: int, input_scale: float = 1.0) -> Decoder:
    """A decoder initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Decoder(layer, input_scale=input_scale)


def feature_input_scale(vgg: nn.Module, layer: str, batches: list[Tensor]) -> float:
    """1 / RMS of the encoder features of ``batches``: the decoder's unit-scale input factor."""
    with torch.no_grad():
        sq = [vgg(b)[layer].float().pow(2).mean() for b in batches]
    return float(1.0 / torch.stack(sq).mean().sqrt().clamp_min(1e-12))


def start_run(opt: dict[str, Any], run_dir: Path, device: torch.device, resume: dict | None,
              log: Callable[[str], None]) -> Run:
    """Load the VGG, build (or restore) the decoder and optimiser, write options.json."""
    vgg, vgg_info = load_encoder(opt, resume and resume["vgg"], log)
    vgg = vgg.to(device)
    scale = 1.0  # a resumed decoder restores its own from the checkpoint
    if resume is None:
        pairs = make_pairs(opt)
        scale = feature_input_scale(vgg, opt["encoder_layer"], [pairs[i][0].to(device) for i in range(4)])
        log(f"decoder input scale: {scale:.4g} (1 / RMS of {opt['encoder_layer']} features)")
    decoder = new_decoder(opt["encoder_layer"], opt["seed"], scale).to(device)
    run = Run(opt, run_dir, device, vgg, vgg_info, decoder,
              torch.optim.Adam(decoder.parameters(), lr=opt["lr"]), MetricsLog(run_dir / "metrics.jsonl"))
    if resume is not None:
        decoder.load_state_dict(resume["decoder"])
        run.optimizer.load_state_dict(resume["optimizer"])
        run.step, run.train_seconds = resume["step"], resume.get("train_seconds", 0.0)
        torch.set_rng_state(resume["rng"]["torch"])
        if "cuda" in resume["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
        log(f"resuming {run_dir} from step {run.step}")
    run.metrics.truncate_after(run.step)
    atomic_write_json(run_dir / "options.json", {**opt, "vgg_info": vgg_info, "device_used": str(device),
                                                 "torch": torch.__version__})
    return run


def save_run(run: Run) -> None:
    """Atomic checkpoint: CPU decoder and optimiser state, step, RNG states, options, VGG info."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_checkpoint(run.run_dir / CHECKPOINT, {
        "decoder": run.decoder.state_dict(), "optimizer": run.optimizer.state_dict(),
        "step": run.step, "rng": rng, "options": run.opt, "vgg": run.vgg_info,
        "train_seconds": run.train_seconds,
        "decoder_config": {"layer": run.opt["encoder_layer"], "input_scale": float(run.decoder.input_scale)}})


def make_pairs(opt: dict[str, Any]) -> StylePairs:
    return StylePairs(content_source(opt["content_dir"] and Path(opt["content_dir"])),
                      style_source(opt["style_dir"] and Path(opt["style_dir"])),
                      crop=opt["crop"], batch_size=opt["batch_size"], seed=opt["seed"])


def make_loader(opt: dict[str, Any], start: int, pin_memory: bool = False):
    """Batches of steps ``start .. steps-1`` (see ``StylePairs``), in worker processes if asked."""
    from torch.utils.data import DataLoader

    workers = opt["workers"]
    return DataLoader(make_pairs(opt), batch_size=None, sampler=range(start, opt["steps"]),
                      num_workers=workers,
                      prefetch_factor=4 if workers else None, pin_memory=pin_memory)


def status_line(step: int, total: int, rec: dict[str, Any]) -> str:
    return (f"step {step:>7d}/{total}  loss {rec['loss']:11.4f}  content {rec['content']:10.4f}  "
            f"style {rec['style']:10.4f}  lr {rec['lr']:.2e}  {rec['steps_per_s']:6.2f} steps/s")


def train_loop(run: Run, log: Callable[[str], None]) -> dict[str, Any]:
    """Steps up to ``opt['steps']`` with metrics, samples and checkpoints; returns the last record."""
    from tqdm import tqdm

    opt, device = run.opt, run.device
    fixed = fixed_samples(opt, run.vgg, device)
    stylizer = Stylizer(run.decoder)
    use_bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    run.decoder.train()
    window: list[dict[str, float]] = []
    last: dict[str, Any] = {"step": run.step}
    t_window = time.perf_counter()
    bar = tqdm(total=opt["steps"], initial=run.step, desc="style", unit="step", dynamic_ncols=True,
               mininterval=1.0, file=sys.stderr)
    try:
        for content, style in make_loader(opt, run.step, pin_memory=device.type == "cuda"):
            t0 = time.perf_counter()
            content, style = content.to(device, non_blocking=True), style.to(device, non_blocking=True)
            window.append(train_step(run.vgg, run.decoder, run.optimizer, content, style, opt,
                                     run.step, autocast))
            run.train_seconds += time.perf_counter() - t0
            run.step += 1
            bar.update(1)
            if _due(run.step, opt["log_every"], opt["steps"]):
                now = time.perf_counter()
                last = log_record(run.step, window, now - t_window, lr_at(opt, run.step - 1),
                                  run.train_seconds)
                run.metrics.append(last)
                bar.write(status_line(run.step, opt["steps"], last))
                window, t_window = [], now
            if _due(run.step, opt["sample_every"], opt["steps"]):
                write_samples(run.run_dir, run.step, stylizer, fixed, opt["sample_side"])
                plot_losses(run.metrics.read(), ["loss", "content", "style"], run.run_dir / "losses.png",
                            f"AdaIN decoder ({opt['encoder_layer']}, {run.vgg_info['source']})")
            if _due(run.step, opt["checkpoint_every"], opt["steps"]):
                save_run(run)
    except KeyboardInterrupt:
        bar.close()
        log(f"interrupted at step {run.step}; continue from the last checkpoint with "
            f"--resume {run.run_dir}")
        raise SystemExit(130) from None
    bar.close()
    return {**last, "train_seconds": run.train_seconds}


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def log_record(step: int, window: list[dict[str, float]], seconds: float, lr: float,
               train_seconds: float) -> dict[str, Any]:
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    return {"step": step, **mean, "lr": lr, "steps_per_s": len(window) / max(seconds, 1e-9),
            "train_seconds": round(train_seconds, 3), "time": time.time()}


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    opt, resume_dir, dry_run = resolve_options(argv)
    if dry_run:
        log(json.dumps({**opt, "resume": str(resume_dir) if resume_dir else None}, indent=2))
        return 0
    device = pick_device(opt["device"])
    if resume_dir is not None:
        run_dir, resume = resume_dir, load_checkpoint(resume_dir / CHECKPOINT)
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
    log(f"done: {run_dir} step {last['step']} in {time.perf_counter() - t0:.1f} s "
        f"(training {last['train_seconds']:.1f} s); sample sheet {run_dir / 'samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
