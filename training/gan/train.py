"""Train a DCGAN: ``python -m training.gan.train --dataset mnist --profile quick``.

One run folder per run (``runs/gan/<name>``): options.json, metrics.jsonl, samples/epoch_NNN.png
(EMA generator, fixed seeds), loss.png, checkpoint.pt (atomic, every epoch), classifier.pt and
judge.pt (the two feature spaces' classifiers) and metrics.json (final quality measures).
``--resume RUN`` continues a killed run from its last checkpoint; the data order and noise of
every step derive from (seed, step), so a resumed run repeats exactly what the uninterrupted one
would have done.

Options and profiles: ``options.py``; the step and the epoch: ``loop.py``; the measures:
``evaluate.py``; this file: the epochs with their logs, samples and checkpoints, and the command.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.distributed import ONE, World, from_main, join, run_then_leave
from training.gan.data import DatasetSplit, load_dataset
from training.gan.evaluate import (
    EPOCH_MEASURES,
    generate,
    grid_inputs,
    independent_reference,
    measure_quality,
    quality_reference,
)
from training.gan.loop import Gan, build_gan, calibration_batches, run_epoch, steps_per_epoch
from training.gan.metrics import Reference
from training.gan.model import Discriminator, Generator
from training.gan.options import GanOptions, build_parser, resolve_options, resumed, with_data
from training.gan.options import build_models as _build_models
from training.imaging import grid, save_png, to_uint8
from training.runs import (
    CHECKPOINT,
    EXIT_DONE,
    MetricsLog,
    atomic_write_json,
    new_run_dir,
    pick_device,
    plot_losses,
    refused_as_usage,
    save_checkpoint,
    start_options,
    until_interrupted,
)


@dataclass(frozen=True)
class Scoring:
    """What every epoch is scored and shown by: the feature space (FID-LeNet, or VGG for unlabelled
    data) and the independent one (None where there is none), each with its real-vs-real baseline,
    the size of a sample set (the held-out split's), and the fixed-seed grid's inputs."""

    reference: Reference
    independent: Reference | None
    samples: int
    grid: tuple[np.ndarray, np.ndarray | None, int]

    def measure(self, o: GanOptions, g: Generator, device: torch.device, sets: int = 1) -> dict:
        """The first space's measures, with the independent space's under ``independent``."""
        spaces = [self.reference] + ([self.independent] if self.independent else [])
        first, *second = measure_quality(o, g, spaces, self.samples, device, sets)
        return {**first, "independent": second[0] if second else None}


def train(
    o: GanOptions, run: Path, data: DatasetSplit, device: torch.device, checkpoint: dict | None, world: World = ONE
) -> dict | None:
    """The epochs, then the final quality measures (rank 0's return; the other ranks' is None)."""
    gan = build_gan(o, device, checkpoint, world)
    per_epoch = steps_per_epoch(o, len(data.train.images), world)
    bar = tqdm(
        total=o.epochs * per_epoch,
        initial=gan.epoch * per_epoch,
        desc="gan",
        unit="step",
        disable=None if world.main else True,
    )
    if not world.main:  # the other ranks train; rank 0 alone measures and writes
        while gan.epoch < o.epochs:
            run_epoch(gan, o, data, device, bar)
        return None
    log = MetricsLog(run / "metrics.jsonl")
    if checkpoint:
        log.truncate_after(gan.step)
    reference = quality_reference(o, run, data, device, tqdm.write)
    o = replace(o, classifier_held_out_accuracy=reference.held_out_accuracy)
    scoring = Scoring(
        reference, independent_reference(o, run, data, device, tqdm.write), len(data.held_out), grid_inputs(o)
    )
    (run / "samples").mkdir(exist_ok=True)
    t0 = time.time()
    while gan.epoch < o.epochs:
        sums = run_epoch(gan, o, data, device, bar)
        end_epoch(o, run, gan, log, scoring, device, sums, per_epoch, time.time() - t0)
    bar.close()
    return finish(o, run, gan, log, scoring, device)


def end_epoch(
    o: GanOptions,
    run: Path,
    gan: Gan,
    log: MetricsLog,
    scoring: Scoring,
    device: torch.device,
    sums: dict,
    per_epoch: int,
    seconds: float,
) -> None:
    """After an epoch: the EMA generator's BatchNorm statistics from a few batches, the sample grid,
    the epoch's record (mean losses, D's outputs, the first sample set's measures) and status line,
    the checkpoint and the loss plot."""
    record = {
        "step": gan.step,
        "epoch": gan.epoch,
        **{k: v / per_epoch for k, v in sums.items() if k != "d_skipped"},
        "d_skipped": sums["d_skipped"],
        "seconds": round(seconds, 2),
    }
    gan.ema.recalibrate(calibration_batches(o, device))
    z, labels, cols = scoring.grid
    save_png(
        grid(to_uint8(generate(gan.ema.model, z, labels, device)), cols), run / "samples" / f"epoch_{gan.epoch:03d}.png"
    )
    quality = scoring.measure(o, gan.ema.model, device)
    record.update({k: quality[k] for k in EPOCH_MEASURES if k in quality})
    record.update({f"independent_{k}": v for k, v in (quality["independent"] or {}).items() if k in EPOCH_MEASURES})
    log.append(record)
    tqdm.write(status_line(o, record))
    save_checkpoint(run / CHECKPOINT, gan.state(o))
    plot_losses(log.read(), ["loss_d", "loss_g"], run / "loss.png", f"GAN losses ({o.dataset})")


def status_line(o: GanOptions, record: dict[str, Any]) -> str:
    return (
        f"epoch {record['epoch']:3d}/{o.epochs} step {record['step']:6d}  loss_d {record['loss_d']:.3f}  "
        f"loss_g {record['loss_g']:.3f}  D(x) {record['d_real']:.2f}  D(G(z)) {record['d_fake']:.2f}  "
        f"skipped {record['d_skipped']:3d}  fid {record['fid_vs_baseline']:.2f}x P/R {record['precision']:.2f}/"
        f"{record['recall']:.2f}"
        + (f"  labels {record['label_agreement']:.1%}" if "label_agreement" in record else "")
        + (
            f"  independent fid {record['independent_fid_vs_baseline']:.2f}x P/R "
            f"{record['independent_precision']:.2f}/{record['independent_recall']:.2f}"
            if "independent_fid" in record
            else ""
        )
        + f"  {record['seconds']:.0f}s"
    )


def finish(o: GanOptions, run: Path, gan: Gan, log: MetricsLog, scoring: Scoring, device: torch.device) -> dict:
    """The exported generator's BatchNorm statistics from many latents (those of 16 batches are noisy
    enough to move its FID by a third of the baseline: docs/gan.md, "BatchNorm statistics"), kept in
    the checkpoint; the grid; the final measures over ``eval_sets`` sets in ``metrics.json``."""
    batches = math.ceil(o.calibration_latents / o.batch_size)  # whole batches
    gan.ema.recalibrate(calibration_batches(o, device, batches))
    save_checkpoint(run / CHECKPOINT, gan.state(o))
    z, labels, cols = scoring.grid
    save_png(grid(to_uint8(generate(gan.ema.model, z, labels, device)), cols), run / "grid.png")
    final = scoring.measure(o, gan.ema.model, device, sets=o.eval_sets)
    final["calibration_latents"] = batches * o.batch_size
    final["training_seconds"] = sum_training_seconds(log.read())
    atomic_write_json(run / "metrics.json", final)
    return final


def sum_training_seconds(records: list[dict]) -> float:
    """Wall time of the epochs, summed over resumed segments (each restarts its clock)."""
    total, last = 0.0, 0.0
    for r in records:
        total += r["seconds"] - last if r["seconds"] >= last else r["seconds"]
        last = r["seconds"]
    return round(total, 1)


def build_models(options: dict[str, Any]) -> tuple[Generator, Discriminator]:
    """The models of a run's options as its checkpoint's JSON holds them (``options.build_models``
    takes the typed options)."""
    return _build_models(GanOptions.from_dict(options))


def main(argv: list[str] | None = None) -> int:
    """Train; exit code 0 when done, 2 for bad options (before any work), 130 when interrupted."""
    parser = build_parser()
    start = start_options(parser, argv, new=resolve_options, resumed=resumed)
    o = start.options
    pick_device(o.device)  # an explicit device that is not here: refused before any work
    if start.dry_run:
        print(json.dumps(o.to_dict() if start.resume else o.command_line(), indent=2))
        return EXIT_DONE
    with refused_as_usage(parser):
        data = load_dataset(o.dataset, o.image_size, o.channels)
        if start.resume is None:
            o = with_data(o, data)
    world, device = join(o.device)
    return run_then_leave(world, lambda: _train(o, start.resume, data, device, start.checkpoint, world))


def _train(
    o: GanOptions, run: Path | None, data: DatasetSplit, device: torch.device, checkpoint: dict | None, world: World
) -> int:
    """Under torchrun every process runs this; rank 0 alone makes the run folder, writes and prints."""
    if run is None:
        run = from_main(world, new_run_dir(Path(o.runs_root), "gan", o.name) if world.main else None)
        o = replace(o, run_dir=str(run))
        if world.main:
            atomic_write_json(run / "options.json", {**o.to_dict(), "processes": world.size})
    if world.main:
        print(
            f"run folder: {run}  device: {device}  dataset: {o.dataset} ({o.train_images} train / "
            f"{o.held_out_images} held out)  conditional: {o.conditional}  diffaugment: {o.diffaugment}"
            + (f"  processes: {world.size}" if world.distributed else "")
        )

    def work() -> int:
        final = train(o, Path(run), data, device, checkpoint, world)
        if world.main:
            print(json.dumps(final, indent=2))
        return EXIT_DONE

    return until_interrupted(
        work,
        lambda: f"interrupted; continue from the last checkpoint (the end of the last whole epoch) with --resume {run}",
        world.main,
    )


if __name__ == "__main__":
    sys.exit(main())
