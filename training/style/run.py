"""What a style training run carries between steps (``Run``), and how it starts, resumes and saves:
the frozen VGG encoder, the decoders and their input scales, the optimiser, the checkpoint and
the batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from training.distributed import ONE, World
from training.runs import CHECKPOINT, MetricsLog, atomic_write_json, save_checkpoint
from training.style.data import TrainingImages, content_source
from training.style.decoder import build_decoder, decoder_config
from training.style.levels import levels_up_to
from training.style.options import StyleOptions
from training.style.step import Reconstruction
from training.vgg import check_same_vgg, load_vgg, recorded_source


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
    """A new run's decoders (``decoder.build_decoder``): every level from the encoder layer down, at
    the decoder width, except relu1_1 — the level that runs on every pixel of the photo — at the
    fine width and with a 1x1 entry convolution (the transform folds into it)."""
    levels = levels_up_to(opt.encoder_layer)
    widths = {level: opt.fine_width if level == "relu1_1" else opt.decoder_width for level in levels}
    return {"levels": levels, "widths": widths, "pointwise_entry": ["relu1_1"]}


def new_decoders(config: dict[str, Any], seed: int, input_scales: dict[str, float] | None = None) -> nn.ModuleDict:
    """The decoders of ``config`` (``decoder.build_decoder``), initialised from ``seed`` without touching
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
