"""Train the reconstruction decoders of universal style transfer against a frozen VGG encoder.

    python -m training.style.train --profile quick            # 2 CPU cores, relu2_1 and relu1_1
    python -m training.style.train --profile full             # a GPU: relu4_1..relu1_1, 256 px
    python -m training.style.train --content-dir ~/coco       # your own photos (recursive)
    python -m training.style.train --resume runs/style/latest # continue a killed run exactly

One decoder per level (``--encoder-layer`` down to relu1_1) learns to turn that level's VGG
features back into the image: pixel MSE plus a feature loss at its own level (Li et al. 2017).
No style image is used: at serving time a closed-form transform gives the features any style's
mean and covariance, and the decoders invert them (see ``model.Cascade``).

Options and profiles: ``options.py``; the run's encoder, decoders, optimiser and checkpoint:
``run.py``; one step: ``step.py``; sample sheets: ``samples.py``; this file: the loop and the
command. The run folder ``runs/style/<name>`` holds options.json, metrics.jsonl, checkpoint.pt, a
content x style sample sheet (samples.png, and samples/step_NNNNNN.png; its second column is the
decoders' reconstruction) and losses.png. The data of step ``i`` is drawn from ``(seed, i)``
alone and the checkpoint holds the decoders, the optimiser and the step, so a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.distributed import World, check_replicas, from_main, join, run_then_leave
from training.runs import EXIT_DONE, new_run_dir, plot_losses, until_interrupted
from training.style.model import Cascade, default_scales
from training.style.options import StyleOptions, start
from training.style.run import Run, layout, make_loader, save_run, start_run
from training.style.samples import fixed_samples, write_samples
from training.style.step import lr_at, train_step
from training.vgg import VGGMismatchError, VGGWeightsError

KIND = "style"


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
    started: list[Run] = []  # the run once built: Ctrl-C while it starts is an interruption too

    def work() -> int:
        try:
            run = start_run(opt, run_dir, device, resume, log, world)
        except (VGGMismatchError, VGGWeightsError) as e:
            log(f"error: {e}")
            return 1
        started.append(run)
        last = train_loop(run, log)
        log(
            f"done: {run_dir} step {last['step']} in {time.perf_counter() - t0:.1f} s "
            f"(training {last['train_seconds']:.1f} s); sample sheet {run_dir / 'samples.png'}"
        )
        return EXIT_DONE

    def interrupted() -> str:
        step = started[0].step if started else (resume["step"] if resume else 0)
        return f"interrupted at step {step}; continue from the last checkpoint with --resume {run_dir}"

    return until_interrupted(work, interrupted, world.main)


if __name__ == "__main__":
    sys.exit(main())
