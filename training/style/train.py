"""Train the reconstruction decoders of universal style transfer against a frozen VGG encoder.

    python -m training.style.train --profile quick            # 2 CPU cores, relu2_1 and relu1_1
    python -m training.style.train --profile full             # a GPU: relu4_1..relu1_1, 256 px
    python -m training.style.train --content-dir ~/coco       # your own photos (recursive)
    python -m training.style.train --resume runs/style/latest # continue a killed run exactly

One decoder per level (``--encoder-layer`` down to relu1_1) learns to turn that level's VGG
features back into the image: pixel MSE plus a feature loss at its own level (Li et al. 2017).
No style image is used: at serving time a closed-form transform gives the features any style's
mean and covariance, and the decoders invert them (see ``model.Cascade``).

Options and profiles: ``options.py``; sample sheets: ``samples.py``; this file: the encoder, the
training step and the loop. The run folder ``runs/style/<name>`` holds options.json, metrics.jsonl,
checkpoint.pt, a content x style sample sheet (samples.png, and samples/step_NNNNNN.png; its second column is the
decoders' reconstruction) and losses.png. The data of step ``i`` is drawn from ``(seed, i)``
alone and the checkpoint holds the decoders, the optimiser and the step, so a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from training.distributed import ONE, World, check_replicas, from_main, join, run_then_leave
from training.runs import (
    CHECKPOINT,
    EXIT_DONE,
    MetricsLog,
    atomic_write_json,
    new_run_dir,
    plot_losses,
    save_checkpoint,
    until_interrupted,
)
from training.style.data import TrainingImages, content_source
from training.style.decoder import build_decoder, decoder_config
from training.style.functions import content_loss, psnr
from training.style.levels import levels_up_to
from training.style.model import Cascade, default_scales
from training.style.options import StyleOptions, start
from training.style.samples import fixed_samples, write_samples
from training.vgg import VGGMismatchError, VGGWeightsError, check_same_vgg, load_vgg, recorded_source

KIND = "style"


# ----------------------------------------------------------------------------- encoder


def load_encoder(opt: StyleOptions, expected: dict[str, Any] | None, log: Callable[[str], None]):
    """The frozen VGG up to the encoder layer, and its info; ``expected``: a checkpoint's VGG info."""
    if expected is None:
        vgg, info = load_vgg(opt.vgg, last_layer=opt.encoder_layer, log=log)
    else:
        vgg, info = load_vgg(recorded_source(expected), arch=expected["arch"], last_layer=opt.encoder_layer, log=log)
        check_same_vgg(expected, info)
    log(
        f"vgg source: {info['source']} ({info['arch']}, weights {info['weights'] or 'random'}, "
        f"sha256 {info['weights_sha256']})"
    )
    return vgg, info


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


def lr_at(opt: StyleOptions, step: int) -> float:
    return opt.lr / (1.0 + opt.lr_decay * step)


class Reconstruction(nn.Module):
    """The frozen VGG and the decoders as one module whose forward is ``compute_losses``: what
    DistributedDataParallel wraps in a distributed run (it averages the decoders' gradients)."""

    def __init__(self, vgg: nn.Module, decoders: nn.ModuleDict, feature_weight: float):
        super().__init__()
        self.vgg, self.decoders, self.feature_weight = vgg, decoders, feature_weight

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return compute_losses(self.vgg, self.decoders, images, self.feature_weight)


def train_step(model: nn.Module, optimizer, images, opt, step, autocast) -> dict[str, Tensor]:
    """One Adam step on a batch of images; returns the losses, detached (on the device: reading
    them is a host synchronisation, left to the logging interval)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(opt, step)
    with autocast():
        losses = model(images)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return {k: v.detach() for k, v in losses.items()}


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything a training run carries between steps."""

    opt: StyleOptions
    run_dir: Path
    device: torch.device
    vgg: nn.Module
    vgg_info: dict[str, Any]
    decoders: nn.ModuleDict  # level -> Decoder, coarse to fine
    optimizer: torch.optim.Optimizer
    metrics: MetricsLog
    world: World = ONE
    model: nn.Module | None = None  # what a step calls: the Reconstruction, DDP-wrapped in a distributed run
    step: int = 0
    train_seconds: float = 0.0


def new_decoder_config(opt: StyleOptions) -> dict[str, Any]:
    """A new run's decoders (``model.build_decoder``): every level from the encoder layer down, at
    the decoder width, except relu1_1 — the level that runs on every pixel of the photo — at the
    fine width and with a 1x1 entry convolution (the transform folds into it)."""
    levels = levels_up_to(opt.encoder_layer)
    widths = {level: opt.fine_width if level == "relu1_1" else opt.decoder_width for level in levels}
    return {"levels": levels, "widths": widths, "pointwise_entry": ["relu1_1"]}


def new_decoders(config: dict[str, Any], seed: int, input_scales: dict[str, float] | None = None) -> nn.ModuleDict:
    """The decoders of ``config`` (``model.build_decoder``), initialised from ``seed`` without touching
    the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scales = input_scales or {}
        return nn.ModuleDict({lv: build_decoder(config, lv, scales.get(lv, 1.0)) for lv in config["levels"]})


def feature_input_scales(vgg: nn.Module, levels: list[str], batches: list[Tensor]) -> dict[str, float]:
    """1 / RMS of each level's features over ``batches``: the decoders' unit-scale input factors."""
    with torch.no_grad():
        feats = [vgg(b, levels) for b in batches]
    return {
        level: float(1.0 / torch.stack([f[level].float().pow(2).mean() for f in feats]).mean().sqrt().clamp_min(1e-12))
        for level in levels
    }


def layout(device: torch.device) -> torch.memory_format:
    """The models' and batches' memory format: channels-last on a GPU (cuDNN's layout for bf16
    convolutions); on the CPU it did not shorten a whole run and moves every number by rounding."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def start_run(
    opt: StyleOptions,
    run_dir: Path,
    device: torch.device,
    resume: dict | None,
    log: Callable[[str], None],
    world: World = ONE,
) -> Run:
    """Load the VGG, build (or restore) the decoder and optimiser, write options.json (rank 0).
    Every rank builds the same decoders (same seed, same scale-measuring images)."""
    vgg, vgg_info = load_encoder(opt, resume and resume["vgg"], log)
    vgg = vgg.to(device, memory_format=layout(device))
    config = new_decoder_config(opt) if resume is None else resume["decoder_config"]
    levels = config["levels"]
    scales = None  # resumed decoders restore their own from the checkpoint
    if resume is None:
        images = make_images(opt)
        scales = feature_input_scales(vgg, levels, [images[i].to(device) for i in range(4)])
        log("decoder input scales (1 / RMS of the features): " + ", ".join(f"{k} {v:.4g}" for k, v in scales.items()))
    decoders = new_decoders(config, opt.seed, scales).to(device, memory_format=layout(device))
    optimizer, metrics = torch.optim.Adam(decoders.parameters(), lr=opt.lr), MetricsLog(run_dir / "metrics.jsonl")
    run = Run(opt, run_dir, device, vgg, vgg_info, decoders, optimizer, metrics, world)
    model = Reconstruction(vgg, decoders, opt.feature_weight)
    ids = [device.index] if device.type == "cuda" else None
    run.model = model if not world.distributed else DistributedDataParallel(model, device_ids=ids)
    if resume is not None:
        decoders.load_state_dict(resume["decoders"])
        run.optimizer.load_state_dict(resume["optimizer"])
        run.step, run.train_seconds = resume["step"], resume.get("train_seconds", 0.0)
        torch.set_rng_state(resume["rng"]["torch"])
        if "cuda" in resume["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
        log(f"resuming {run_dir} from step {run.step}")
    if world.main:
        run.metrics.truncate_after(run.step)
        info = {"vgg_info": vgg_info, "device_used": str(device), "torch": torch.__version__, "processes": world.size}
        atomic_write_json(run_dir / "options.json", {**opt.to_dict(), **info})
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
            "options": run.opt.to_dict(),
            "vgg": run.vgg_info,
            "train_seconds": run.train_seconds,
            "decoder_config": {**decoder_config(run.decoders), "width": run.opt.decoder_width},
        },
    )


def make_images(opt: StyleOptions, shard: int = 0) -> TrainingImages:
    source = content_source(opt.content_dir and Path(opt.content_dir))
    return TrainingImages(source, crop=opt.crop, batch_size=opt.batch_size, seed=opt.seed, shard=shard)


def make_loader(opt: StyleOptions, start: int, pin_memory: bool = False, shard: int = 0):
    """Batches of steps ``start .. steps-1`` (see ``TrainingImages``), in worker processes if asked;
    ``shard``: a distributed run's rank, which draws its own batches."""
    from torch.utils.data import DataLoader

    return DataLoader(
        make_images(opt, shard),
        batch_size=None,
        sampler=range(start, opt.steps),
        num_workers=opt.workers,
        prefetch_factor=4 if opt.workers else None,
        pin_memory=pin_memory,
    )


def status_line(step: int, total: int, rec: dict[str, Any]) -> str:
    psnrs = "  ".join(f"{k[5:]} {v:5.2f} dB" for k, v in rec.items() if k.startswith("psnr_"))
    return (
        f"step {step:>7d}/{total}  loss {rec['loss']:9.5f}  {psnrs}  lr {rec['lr']:.2e}  "
        f"{rec['steps_per_s']:6.2f} steps/s"
    )


def train_loop(run: Run, log: Callable[[str], None]) -> dict[str, Any]:
    """Steps up to ``opt.steps`` with metrics, samples and checkpoints; returns the last record."""
    from tqdm import tqdm

    opt, device, main = run.opt, run.device, run.world.main
    # the sample sheet shows what the export will serve (its default pyramid)
    coarse, fine = default_scales([d.layer for d in run.decoders.values()])
    cascade = Cascade(run.vgg, list(run.decoders.values()), coarse_scales=coarse, fine_scales=fine)
    fixed = fixed_samples(opt.to_dict(), run.vgg, device, cascade.size_multiple) if main else None
    use_bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    run.decoders.train()
    window: list[dict[str, float]] = []
    last: dict[str, Any] = {"step": run.step}
    t_window = time.perf_counter()
    bar = tqdm(
        total=opt.steps,
        initial=run.step,
        desc="style",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
        disable=None if main else True,
    )
    try:
        for images in make_loader(opt, run.step, pin_memory=device.type == "cuda", shard=run.world.rank):
            t0 = time.perf_counter()
            images = images.to(device, non_blocking=True, memory_format=layout(device))
            window.append(train_step(run.model, run.optimizer, images, opt, run.step, autocast))
            run.train_seconds += time.perf_counter() - t0
            run.step += 1
            bar.update(1)
            if _due(run.step, opt.log_every, opt.steps):
                now = time.perf_counter()
                last = log_record(run.step, window, now - t_window, lr_at(opt, run.step - 1), run.train_seconds)
                if main:
                    run.metrics.append(last)
                    bar.write(status_line(run.step, opt.steps, last))
                window, t_window = [], now
            if _due(run.step, opt.checkpoint_every, opt.steps):
                check_replicas(run.world, run.decoders, device)  # every rank, before rank 0 saves
                if main:
                    save_run(run)
            if not main:
                continue
            if _due(run.step, opt.sample_every, opt.steps):
                write_samples(run.run_dir, run.step, cascade, fixed, opt.sample_side)
                plot_losses(
                    run.metrics.read(),
                    ["loss", *(f"pixel_{k}" for k in run.decoders)],
                    run.run_dir / "losses.png",
                    f"reconstruction decoders ({', '.join(run.decoders)}, {run.vgg_info['source']})",
                )
    finally:  # Ctrl-C included (the command's skeleton turns it into exit code 130)
        bar.close()
    return {**last, "train_seconds": run.train_seconds}


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def log_record(
    step: int, window: list[dict[str, float]], seconds: float, lr: float, train_seconds: float
) -> dict[str, Any]:
    mean = {k: float(torch.stack([w[k] for w in window]).mean()) for k in window[0]}  # one host sync
    return {
        "step": step,
        **mean,
        "lr": lr,
        "steps_per_s": len(window) / max(seconds, 1e-9),
        "train_seconds": round(train_seconds, 3),
        "time": time.time(),
    }


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    """Train; exit code 0 when done, 2 for bad options (before any work), 130 when interrupted.
    Under torchrun, every process runs this; rank 0 alone writes and prints."""
    begin = start(argv)
    opt = begin.options
    if begin.dry_run:
        log(json.dumps({**opt.to_dict(), "resume": str(begin.resume) if begin.resume else None}, indent=2))
        return EXIT_DONE
    world, device = join(opt.device)
    quiet = log if world.main else lambda line: None
    return run_then_leave(world, lambda: _train(opt, begin.resume, begin.checkpoint, world, device, quiet))


def _train(
    opt: StyleOptions, resume_dir: Path | None, resume: dict | None, world: World, device: torch.device, log
) -> int:
    if resume_dir is not None:
        run_dir = resume_dir
        if resume["step"] >= opt.steps:
            log(f"{run_dir} is already at step {resume['step']} >= --steps {opt.steps}; nothing to do")
            return EXIT_DONE
    else:
        run_dir = from_main(world, new_run_dir(Path(opt.runs_root), KIND, opt.name) if world.main else None)
    log(f"run folder: {run_dir}  device: {device}" + (f"  processes: {world.size}" if world.distributed else ""))
    t0 = time.perf_counter()
    try:
        run = start_run(opt, run_dir, device, resume, log, world)
    except (VGGMismatchError, VGGWeightsError) as e:
        log(f"error: {e}")
        return 1

    def work() -> int:
        last = train_loop(run, log)
        log(
            f"done: {run_dir} step {last['step']} in {time.perf_counter() - t0:.1f} s "
            f"(training {last['train_seconds']:.1f} s); sample sheet {run_dir / 'samples.png'}"
        )
        return EXIT_DONE

    return until_interrupted(
        work,
        lambda: f"interrupted at step {run.step}; continue from the last checkpoint with --resume {run_dir}",
        world.main,
    )


if __name__ == "__main__":
    sys.exit(main())
