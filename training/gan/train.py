"""Train a DCGAN: ``python -m training.gan.train --dataset mnist --profile quick``.

One run folder per run (``runs/gan/<name>``): options.json, metrics.jsonl, samples/epoch_NNN.png
(EMA generator, fixed seeds), loss.png, checkpoint.pt (atomic, every epoch), classifier.pt and
metrics.json (final quality measures). ``--resume RUN`` continues a killed run from its last
checkpoint; the data order and noise of every step derive from (seed, step), so a resumed run
repeats exactly what the uninterrupted one would have done.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.sampling import latents_for_seeds
from training.distributed import (
    ONE,
    World,
    average_gradients,
    check_replicas,
    from_main,
    join,
    mean_across,
    run_then_leave,
    share_buffers,
)
from training.gan.data import DatasetSplit, load_dataset, parse_dataset_spec
from training.gan.functions import AUGMENTS, EMA, LOSSES, d_loss, diff_augment, g_loss, mode_seeking_loss, r1_penalty
from training.gan.metrics import LeNet, Reference, classifier_featurizer, train_classifier, vgg_featurizer
from training.gan.model import SUPPORTED_SIZES, Discriminator, Generator
from training.imaging import grid, save_png, to_uint8
from training.runs import (
    CHECKPOINT,
    MetricsLog,
    atomic_write_json,
    explicit_options,
    load_checkpoint,
    new_run_dir,
    pick_device,
    plot_losses,
    resumed_options,
    save_checkpoint,
)

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
# measured in one feature space (with the run's seed, a seed-1 classifier scored 94.8% held out
# where seed 0's scores 96.2%, and every FID, precision and recall moved with it).
CLASSIFIER_SEED = 0
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
# How often the progress bar shows the step's losses: reading them waits for the GPU to finish the
# step, so the hot loop reads nothing else (the epoch's sums stay on the device until its end).
POSTFIX_EVERY = 50
# The first latent seeds of the evaluation samples and of the BatchNorm calibration's latents.
EVAL_SEED = 1_000_000
CALIBRATION_SEED = 2_000_000
# Batches of latents the EMA generator's BatchNorm statistics are estimated from before each epoch's
# samples and measures (the end uses --calibration-latents: docs/gan.md, "BatchNorm statistics").
EPOCH_CALIBRATION_BATCHES = 16


def stored_options(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A run's options as its checkpoint holds them, with any option added since filled in."""
    return {**ADDED_OPTIONS, **json.loads(checkpoint["options"])}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.gan.train",
        description=__doc__.split("\n\n")[0],
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


PRECISIONS = ("auto", "fp32", "bf16")


def uses_bf16(o: dict[str, Any], device: torch.device) -> bool:
    """Whether the run's forward passes autocast to bfloat16 on ``device`` (``--precision``)."""
    return o["precision"] == "bf16" or (o["precision"] == "auto" and device.type == "cuda")


def require_positive(o: dict[str, Any], keys: tuple[str, ...]) -> None:
    """ValueError naming the first of the counts ``keys`` that is below 1."""
    for key in keys:
        if o[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1")


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
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
    if o["image_size"] not in SUPPORTED_SIZES:
        raise ValueError(f"--image-size must be one of {SUPPORTED_SIZES}")
    if kind == "mnist" and o["channels"] != 1:
        raise ValueError("--channels: mnist is grayscale (1 channel)")
    require_positive(
        o,
        (
            "latent_dim",
            "g_channels",
            "d_channels",
            "batch_size",
            "epochs",
            "classifier_epochs",
            "eval_sets",
            "calibration_latents",
        ),
    )
    for key in ("lr_g", "lr_d"):
        if not 0 < o[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be in (0, 1)")
    if not 0 <= o["lr_decay"] <= 1:
        raise ValueError("--lr-decay must be in [0, 1]")
    if not 0 <= o["label_smoothing"] < 0.5:
        raise ValueError("--label-smoothing must be in [0, 0.5)")
    if o["mode_seeking"] < 0:
        raise ValueError("--mode-seeking must be at least 0")
    if o["r1"] < 0 or o["r1_every"] < 1:
        raise ValueError("--r1 must be at least 0 and --r1-every at least 1")
    if o["aux_classifier"] < 0:
        raise ValueError("--aux-classifier must be at least 0")
    if not 0 <= o["ema_decay"] < 1:
        raise ValueError("--ema-decay must be in [0, 1)")
    if o["diffaugment"] not in ("auto", "none"):
        diff_augment(torch.zeros(1, 1, 8, 8), o["diffaugment"])  # raises on unknown names
    o["runs_root"] = str(o["runs_root"])
    o["resume"] = str(o["resume"]) if o["resume"] else None
    return o


def resolve_data_dependent(o: dict[str, Any], data: DatasetSplit) -> None:
    n = len(data.train)
    if o["diffaugment"] == "auto":
        o["diffaugment"] = "color,translation" if n < 2_000 else "none"
    o["conditional"] = {"auto": data.num_classes > 1, "yes": True, "no": False}.get(o["conditional"], o["conditional"])
    if o["conditional"] and data.num_classes < 2:
        raise ValueError(f"--conditional yes: dataset {o['dataset']} has no class labels")
    o["num_classes"] = data.num_classes if o["conditional"] else 0
    o["class_names"] = data.train.class_names if o["conditional"] else None
    o["train_images"], o["held_out_images"] = n, len(data.held_out)
    if n < o["batch_size"]:
        raise ValueError(f"--batch-size {o['batch_size']} is larger than the training split ({n} images)")


def build_models(o: dict[str, Any]) -> tuple[Generator, Discriminator]:
    g = Generator(
        o["latent_dim"], o["image_size"], o["channels"], o["g_channels"], o["num_classes"], upsample=o["upsample"]
    )
    d = Discriminator(
        o["image_size"],
        o["channels"],
        o["d_channels"],
        o["num_classes"],
        spectral=o["spectral_norm"],
        minibatch_std=o["minibatch_std"],
        aux_classifier=o["aux_classifier"] > 0,
    )
    return g, d


def grid_inputs(o: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The fixed-seed sample grid: columns are seeds 0..9, rows are classes (or 8x8 seeds 0..63)."""
    if o["num_classes"]:
        cols = 10
        rows = min(o["num_classes"], 10)
        seeds = list(range(cols)) * rows
        labels = np.repeat(np.arange(rows), cols)
        return latents_for_seeds(seeds, o["latent_dim"]), labels, cols
    return latents_for_seeds(list(range(64)), o["latent_dim"]), None, 8


@torch.no_grad()
def generate(
    g: Generator, z: np.ndarray, labels: np.ndarray | None, device: torch.device, batch: int = 500
) -> torch.Tensor:
    out = []
    for i in range(0, len(z), batch):
        zt = torch.from_numpy(z[i : i + batch]).to(device)
        lt = None if labels is None else torch.from_numpy(labels[i : i + batch]).long().to(device)
        out.append(g(zt, lt).cpu())
    return torch.cat(out)


def calibration_batches(
    o: dict[str, Any],
    device: torch.device,
    batches: int = EPOCH_CALIBRATION_BATCHES,
    first_seed: int = CALIBRATION_SEED,
):
    """Batches of fixed latents (seeds ``first_seed`` on) and cycling labels, in the run's batch size
    (a batch's variance is what the generator trained with), for the EMA generator's BatchNorm statistics."""
    bs = o["batch_size"]
    for b in range(batches):
        first = first_seed + b * bs
        z = torch.from_numpy(latents_for_seeds(list(range(first, first + bs)), o["latent_dim"]))
        labels = (torch.arange(bs) % o["num_classes"]).to(device) if o["num_classes"] else None
        yield (z.to(device), labels) if labels is not None else (z.to(device),)


def step_generator(seed: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """The noise of a step (a distributed run's rank > 0 draws its own; rank 0 is the one-process stream)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step + rank * 7_919_000_001)


@dataclass
class Gan:
    """The models, their optimisers, the EMA generator and where the run stands."""

    g: Generator
    d: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA
    world: World = ONE
    epoch: int = 0
    step: int = 0
    # D's loss at the previous step, averaged over the ranks: the skip rule's input, kept on the
    # device and read one step late (by then the GPU has computed it and is busy with the rest of
    # that step, so the read does not drain its queue)
    last_d_loss: torch.Tensor | float = math.inf
    bf16: bool = False

    def autocast(self):
        """The forward passes' autocast context (bfloat16 with ``--precision``, else a no-op)."""
        device = next(self.g.parameters()).device
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def state(self, o: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint: everything a resumed run needs to continue exactly."""
        return {
            "generator": self.g.state_dict(),
            "discriminator": self.d.state_dict(),
            "generator_ema": self.ema.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "last_d_loss": float(self.last_d_loss),
            "options": json.dumps(o),
        }


def build_gan(o: dict[str, Any], device: torch.device, checkpoint: dict | None, world: World = ONE) -> Gan:
    """Fresh models from the run's seed (the same on every rank), or the checkpoint's. On GPUs in
    a distributed run BatchNorm becomes SyncBatchNorm (statistics over the global batch); gloo on
    the CPU has no SyncBatchNorm, and there each rank normalises its own batch."""
    torch.manual_seed(o["seed"])
    g, d = build_models(o)
    if world.distributed and device.type == "cuda":
        g, d = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (g, d))
    # Channels-last: oneDNN's and cuDNN's faster convolution layout (about a fifth off a CPU step).
    g, d = (m.to(device, memory_format=torch.channels_last) for m in (g, d))
    opt_g = torch.optim.Adam(g.parameters(), lr=o["lr_g"], betas=(o["beta1"], 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=o["lr_d"], betas=(o["beta1"], 0.999))
    gan = Gan(g, d, opt_g, opt_d, EMA(g, o["ema_decay"]), world, bf16=uses_bf16(o, device))
    if checkpoint:
        g.load_state_dict(checkpoint["generator"])
        d.load_state_dict(checkpoint["discriminator"])
        gan.ema.model.load_state_dict(checkpoint["generator_ema"])
        opt_g.load_state_dict(checkpoint["opt_g"])
        opt_d.load_state_dict(checkpoint["opt_d"])
        gan.epoch, gan.step, gan.last_d_loss = checkpoint["epoch"], checkpoint["step"], checkpoint["last_d_loss"]
    return gan


def gan_step(gan: Gan, o: dict[str, Any], real: torch.Tensor, y: torch.Tensor | None, rng: torch.Generator) -> dict:
    """One step: the discriminator (skipped while it was already winning at the previous step),
    then the generator through it. Returns the step's losses and D's mean outputs as tensors on the
    device, and whether D was skipped: nothing is read on the host but the previous step's D loss.
    The forward passes run in ``gan.autocast()``; the losses are taken in float32."""
    bs, policy = real.shape[0], "" if o["diffaugment"] == "none" else o["diffaugment"]
    z = torch.randn(bs, o["latent_dim"], generator=rng, device=real.device)
    fake_y = None
    if o["num_classes"]:  # the two halves of the batch share labels (pairs for the mode-seeking term)
        half = torch.randint(0, o["num_classes"], (bs - bs // 2,), generator=rng, device=real.device)
        fake_y = torch.cat([half, half[: bs // 2]])
    with gan.autocast():
        fake = gan.g(z, fake_y)
    aux = o["aux_classifier"] if fake_y is not None else 0

    def judged(images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's real/fake logits, and its class logits when the class head is trained (else None), in float32."""
        with gan.autocast():
            logits, classes = gan.d(images, labels, classes=True) if aux else (gan.d(images, labels), None)
        return logits.float(), None if classes is None else classes.float()

    # Discriminator: real -> 1, generated -> 0 (and, with the class head, the real images' labels).
    real_logits, real_classes = judged(diff_augment(real, policy, rng), y)
    with gan.autocast():
        fake_logits = gan.d(diff_augment(fake.detach(), policy, rng), fake_y).float()
    loss_d = d_loss(o["loss"], real_logits, fake_logits, o["label_smoothing"])
    if aux:
        loss_d = loss_d + aux * F.cross_entropy(real_classes, y)
    if o["r1"] > 0 and gan.step % o["r1_every"] == 0:  # lazy R1: every r1_every steps, that much stronger
        sharp = real.detach().requires_grad_(True)
        with gan.autocast():
            logits = gan.d(sharp, y)
        loss_d = loss_d + o["r1"] / 2 * o["r1_every"] * r1_penalty(sharp, logits)
    # the skip rule reads the previous step's loss (a NaN skips, as before): the step's one read
    skipped = not bool(gan.last_d_loss >= o["d_skip_below"])
    if not skipped:
        gan.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        average_gradients(gan.world, gan.d)
        gan.opt_d.step()
    # averaged over the ranks, so that they all decide alike at the next step
    gan.last_d_loss = mean_across(gan.world, loss_d)
    # Generator, through the discriminator: make generated images score as real. D is frozen for
    # this pass: its weight gradients would only be thrown away.
    gan.d.requires_grad_(False)
    fake_for_g, fake_classes = judged(diff_augment(fake, policy, rng), fake_y)
    loss_g = g_loss(o["loss"], fake_for_g)
    if aux:
        loss_g = loss_g + aux * F.cross_entropy(fake_classes, fake_y)
    if o["mode_seeking"] > 0:
        h, images = bs // 2, fake.float()
        loss_g = loss_g + o["mode_seeking"] * mode_seeking_loss(images[:h], images[bs - h :], z[:h], z[bs - h :])
    gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    average_gradients(gan.world, gan.g)
    gan.opt_g.step()
    gan.d.requires_grad_(True)
    gan.ema.update(gan.g, gan.step)
    scalars = [gan.last_d_loss, loss_g, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()]
    return {"scalars": torch.stack([t.detach().to(torch.float64) for t in scalars]), "d_skipped": int(skipped)}


def steps_per_epoch(o: dict[str, Any], n: int, world: World) -> int:
    return n // (o["batch_size"] * world.size)


# the per-step scalars ``gan_step`` returns, in its order
SCALARS = ("loss_d", "loss_g", "d_real", "d_fake")


def learning_rate_scale(o: dict[str, Any], epoch: int) -> float:
    """The learning rates' factor in (0-based) ``epoch``: 1, then over the last ``lr_decay`` share of
    the epochs a linear fall that would reach 0 after the last (1/k in the k-th epoch from the end)."""
    decaying = round(o["lr_decay"] * o["epochs"])
    return min(1.0, (o["epochs"] - epoch) / decaying) if decaying else 1.0


def run_epoch(gan: Gan, o: dict[str, Any], data: DatasetSplit, device: torch.device, bar: tqdm) -> dict:
    """One pass over the training split in the epoch's own order, at the epoch's learning rates; the
    sums of the steps' scalars (summed on the device, read once at the end). In a distributed run
    each step's batches are consecutive slices of the order, one per rank."""
    scale = learning_rate_scale(o, gan.epoch)
    for opt, key in ((gan.opt_g, "lr_g"), (gan.opt_d, "lr_d")):
        for group in opt.param_groups:
            group["lr"] = o[key] * scale
    images, labels = data.train.images, data.train.labels
    n, bs, world = len(images), o["batch_size"], gan.world
    order = torch.randperm(n, generator=torch.Generator().manual_seed(o["seed"] * 7919 + gan.epoch))
    sums, skipped = torch.zeros(len(SCALARS), dtype=torch.float64, device=device), 0
    gan.g.train(), gan.d.train()
    for i in range(steps_per_epoch(o, n, world)):
        gan.step += 1
        rng = step_generator(o["seed"], gan.step, device, world.rank)
        first = (i * world.size + world.rank) * bs
        idx = order[first : first + bs]
        y = labels[idx].to(device) if o["num_classes"] else None
        real = images[idx].to(device, memory_format=torch.channels_last)
        out = gan_step(gan, o, real, y, rng)
        sums += out["scalars"]
        skipped += out["d_skipped"]
        bar.update(1)
        if gan.step % POSTFIX_EVERY == 0:  # a logging interval: the one other read of the loop
            loss_d, loss_g = out["scalars"][:2].tolist()
            bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}")
    gan.epoch += 1
    share_buffers(world, gan.g)  # BatchNorm's running statistics: rank 0's, as a checkpoint keeps them
    share_buffers(world, gan.d)
    check_replicas(world, gan.g, device)
    check_replicas(world, gan.d, device)
    return {**dict(zip(SCALARS, sums.tolist())), "d_skipped": skipped}


def train(
    o: dict[str, Any], run: Path, data: DatasetSplit, device: torch.device, checkpoint: dict | None, world: World = ONE
) -> dict | None:
    """The epochs, then the final quality measures (rank 0's return; the other ranks' is None)."""
    gan = build_gan(o, device, checkpoint, world)
    per_epoch = steps_per_epoch(o, len(data.train.images), world)
    bar = tqdm(
        total=o["epochs"] * per_epoch,
        initial=gan.epoch * per_epoch,
        desc="gan",
        unit="step",
        disable=None if world.main else True,
    )
    if not world.main:  # the other ranks train; rank 0 alone measures and writes
        while gan.epoch < o["epochs"]:
            run_epoch(gan, o, data, device, bar)
        return None
    log = MetricsLog(run / "metrics.jsonl")
    if checkpoint:
        log.truncate_after(gan.step)
    reference = quality_reference(o, run, data, device)
    n_eval = len(data.held_out)
    grid_z, grid_labels, grid_cols = grid_inputs(o)
    (run / "samples").mkdir(exist_ok=True)
    t0 = time.time()
    while gan.epoch < o["epochs"]:
        sums = run_epoch(gan, o, data, device, bar)
        record = {
            "step": gan.step,
            "epoch": gan.epoch,
            **{k: v / per_epoch for k, v in sums.items() if k != "d_skipped"},
            "d_skipped": sums["d_skipped"],
            "seconds": round(time.time() - t0, 2),
        }
        gan.ema.recalibrate(calibration_batches(o, device))
        samples = generate(gan.ema.model, grid_z, grid_labels, device)
        save_png(grid(to_uint8(samples), grid_cols), run / "samples" / f"epoch_{gan.epoch:03d}.png")
        quality = measure_quality(o, gan.ema.model, reference, n_eval, device)
        record.update({k: quality[k] for k in EPOCH_MEASURES if k in quality})
        log.append(record)
        tqdm.write(
            f"epoch {gan.epoch:3d}/{o['epochs']} step {gan.step:6d}  loss_d {record['loss_d']:.3f}  "
            f"loss_g {record['loss_g']:.3f}  D(x) {record['d_real']:.2f}  D(G(z)) {record['d_fake']:.2f}  "
            f"skipped {sums['d_skipped']:3d}  fid {record['fid']:.2f}  P/R {record['precision']:.2f}/"
            f"{record['recall']:.2f}"
            + (f"  labels {record['label_agreement']:.1%}" if "label_agreement" in record else "")
            + f"  {record['seconds']:.0f}s"
        )
        save_checkpoint(run / CHECKPOINT, gan.state(o))
        plot_losses(log.read(), ["loss_d", "loss_g"], run / "loss.png", f"GAN losses ({o['dataset']})")
    bar.close()
    # The statistics the exported generator keeps, from many latents: those of 16 batches are noisy
    # enough to move its FID by a third of the baseline (docs/gan.md, "BatchNorm statistics").
    batches = math.ceil(o["calibration_latents"] / o["batch_size"])  # whole batches
    gan.ema.recalibrate(calibration_batches(o, device, batches))
    save_checkpoint(run / CHECKPOINT, gan.state(o))
    save_png(grid(to_uint8(generate(gan.ema.model, grid_z, grid_labels, device)), grid_cols), run / "grid.png")
    final = measure_quality(o, gan.ema.model, reference, n_eval, device, sets=o["eval_sets"])
    final["calibration_latents"] = batches * o["batch_size"]
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


def quality_reference(o: dict[str, Any], run: Path, data: DatasetSplit, device: torch.device) -> Reference:
    """The feature space for FID and precision/recall, with the real-vs-real baseline.

    Labelled data: a LeNet classifier trained once per run on the training split from
    ``CLASSIFIER_SEED`` whatever the run's seed (kept in the run folder, so a resumed run reuses
    it). Unlabelled data: generic VGG features, labelled as such.
    """
    if not o["num_classes"]:
        from training.vgg import load_vgg

        vgg, info = load_vgg(o["quality_vgg"], log=tqdm.write)
        space = f"generic: VGG ({info['source']}) relu4_1 channel means — no classifier for unlabelled data"
        return Reference(vgg_featurizer(vgg.to(device), device), space, data.train.images, data.held_out.images, 0)
    path = run / "classifier.pt"
    model = LeNet(o["channels"], o["image_size"], o["num_classes"])
    if path.exists():
        model.load_state_dict(load_checkpoint(path)["model"])
        model = model.to(device).eval()
    else:
        model = train_classifier(
            data.train.images, data.train.labels, o["num_classes"], o["classifier_epochs"], device, CLASSIFIER_SEED
        )
        save_checkpoint(path, {"model": model.state_dict()})
    with torch.no_grad():
        pred = model(data.held_out.images.to(device)).argmax(1).cpu()
    o["classifier_held_out_accuracy"] = float((pred == data.held_out.labels).float().mean())
    space = (
        f"FID-LeNet: classifier trained on the {o['dataset']} training split "
        f"(held-out accuracy {o['classifier_held_out_accuracy']:.4f}), 128-d penultimate layer"
    )
    tqdm.write(space)
    return Reference(
        classifier_featurizer(model, device), space, data.train.images, data.held_out.images, o["num_classes"]
    )


def evaluation_samples(
    o: dict[str, Any], g: Generator, n: int, device: torch.device, first_seed: int = EVAL_SEED
) -> tuple[torch.Tensor, np.ndarray | None]:
    """``n`` EMA samples from the evaluation seeds ``first_seed`` on, classes cycling when conditional."""
    z = latents_for_seeds(list(range(first_seed, first_seed + n)), o["latent_dim"])
    labels = np.arange(n) % o["num_classes"] if o["num_classes"] else None
    return generate(g.eval(), z, labels, device), labels


# The measures logged after every epoch (metrics.jsonl); metrics.json has them all at the end.
EPOCH_MEASURES = ("fid", "precision", "recall", "label_agreement")


def measure_quality(
    o: dict[str, Any], g: Generator, reference: Reference, n: int, device: torch.device, sets: int = 1
) -> dict:
    """FID, precision/recall and class coverage of ``sets`` disjoint sets of ``n`` samples from the
    evaluation seeds (set k from seed 1,000,000 + k n; each epoch's log scores set 0), averaged over
    the sets, and, for a conditional generator, how often the classifier agrees with the label asked for."""
    result = reference.evaluate_sets(
        evaluation_samples(o, g, n, device, EVAL_SEED + k * n) for k in range(sets)
    )  # each set featurized once
    if o["num_classes"]:
        result["classifier_held_out_accuracy"] = o["classifier_held_out_accuracy"]
    return result


def main(argv: list[str] | None = None) -> int:
    """Train; exit code 0 when done, 2 for bad options (before any work), 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    checkpoint = None
    try:
        if args.resume:
            run = args.resume
            if not (run / CHECKPOINT).exists():
                raise ValueError(f"--resume {run}: no {CHECKPOINT} there")
            checkpoint = load_checkpoint(run / CHECKPOINT)
            given = {k: v for k, v in explicit_options(parser, argv).items() if k not in ("resume", "dry_run")}
            o = resumed_options(stored_options(checkpoint), given, RESUMABLE_OVERRIDES)
            require_positive(o, ("epochs", "eval_sets", "calibration_latents"))  # the counts --resume may change
        else:
            o = resolve_options(args)
        pick_device(o["device"])  # an explicit device that is not here: refused before any work
        if args.dry_run:
            print(json.dumps(o, indent=2))
            return 0
        data = load_dataset(o["dataset"], o["image_size"], o["channels"])
        if not args.resume:
            resolve_data_dependent(o, data)
    except ValueError as e:
        parser.error(str(e))  # usage and the message on stderr, exit code 2: as the style trainer
    world, device = join(o["device"])
    return run_then_leave(world, lambda: _train(o, run if args.resume else None, data, device, checkpoint, world))


def _train(o, resumed: Path | None, data: DatasetSplit, device, checkpoint, world: World) -> int:
    """Under torchrun every process runs this; rank 0 alone makes the run folder, writes and prints."""
    run = resumed
    if run is None:
        run = from_main(world, new_run_dir(Path(o["runs_root"]), "gan", o["name"]) if world.main else None)
        o["run_dir"] = str(run)
        if world.main:
            atomic_write_json(run / "options.json", {**o, "processes": world.size})
    if world.main:
        print(
            f"run folder: {run}  device: {device}  dataset: {o['dataset']} ({o['train_images']} train / "
            f"{o['held_out_images']} held out)  conditional: {o['conditional']}  diffaugment: {o['diffaugment']}"
            + (f"  processes: {world.size}" if world.distributed else "")
        )
    try:
        final = train(o, Path(run), data, device, checkpoint, world)
    except KeyboardInterrupt:
        if world.main:
            print(
                f"\ninterrupted; continue from the last checkpoint (the end of the last whole epoch) with "
                f"--resume {run}",
                file=sys.stderr,
            )
        return 130
    if world.main:
        print(json.dumps(final, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
