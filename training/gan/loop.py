"""The GAN's training loop: the models and optimisers of a run, one step (D, then G through it) and
one epoch. The data order and noise of every step derive from (seed, step), so a resumed run
repeats exactly what the uninterrupted one would have done."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.sampling import latents_for_seeds
from training.distributed import ONE, World, average_gradients, check_replicas, mean_across, share_buffers
from training.gan.data import DatasetSplit
from training.gan.functions import EMA, as_float, d_loss, diff_augment, g_loss, mode_seeking_loss, r1_penalty
from training.gan.model import Discriminator, Generator
from training.gan.options import CALIBRATION_SEED, EPOCH_CALIBRATION_BATCHES, GanOptions, build_models, uses_bf16

# How often the progress bar shows the step's losses: reading them waits for the GPU to finish the
# step, so the hot loop reads nothing else (the epoch's sums stay on the device until its end).
POSTFIX_EVERY = 50
# the per-step scalars ``gan_step`` returns, in its order
SCALARS = ("loss_d", "loss_g", "d_real", "d_fake")


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

    def state(self, o: GanOptions) -> dict:
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
            "options": json.dumps(o.to_dict()),
        }


def build_gan(o: GanOptions, device: torch.device, checkpoint: dict | None, world: World = ONE) -> Gan:
    """Fresh models from the run's seed (the same on every rank), or the checkpoint's. On GPUs in
    a distributed run BatchNorm becomes SyncBatchNorm (statistics over the global batch); gloo on
    the CPU has no SyncBatchNorm, and there each rank normalises its own batch."""
    torch.manual_seed(o.seed)
    g, d = build_models(o)
    if world.distributed and device.type == "cuda":
        g, d = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (g, d))
    # Channels-last: oneDNN's and cuDNN's faster convolution layout (about a fifth off a CPU step).
    g, d = (m.to(device, memory_format=torch.channels_last) for m in (g, d))
    opt_g = torch.optim.Adam(g.parameters(), lr=o.lr_g, betas=(o.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=o.lr_d, betas=(o.beta1, 0.999))
    gan = Gan(g, d, opt_g, opt_d, EMA(g, o.ema_decay), world, bf16=uses_bf16(o, device))
    if checkpoint:
        g.load_state_dict(checkpoint["generator"])
        d.load_state_dict(checkpoint["discriminator"])
        gan.ema.model.load_state_dict(checkpoint["generator_ema"])
        opt_g.load_state_dict(checkpoint["opt_g"])
        opt_d.load_state_dict(checkpoint["opt_d"])
        gan.epoch, gan.step, gan.last_d_loss = checkpoint["epoch"], checkpoint["step"], checkpoint["last_d_loss"]
    return gan


def step_generator(seed: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """The noise of a step (a distributed run's rank > 0 draws its own; rank 0 is the one-process stream)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step + rank * 7_919_000_001)


def calibration_batches(
    o: GanOptions,
    device: torch.device,
    batches: int = EPOCH_CALIBRATION_BATCHES,
    first_seed: int = CALIBRATION_SEED,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches of fixed latents (seeds ``first_seed`` on) and cycling labels, in the run's batch size
    (a batch's variance is what the generator trained with), for the EMA generator's BatchNorm statistics."""
    bs = o.batch_size
    for b in range(batches):
        first = first_seed + b * bs
        z = torch.from_numpy(latents_for_seeds(list(range(first, first + bs)), o.latent_dim))
        labels = (torch.arange(bs) % o.num_classes).to(device) if o.num_classes else None
        yield (z.to(device), labels) if labels is not None else (z.to(device),)


def gan_step(gan: Gan, o: GanOptions, real: torch.Tensor, y: torch.Tensor | None, rng: torch.Generator) -> dict:
    """One step: the discriminator (skipped while it was already winning at the previous step),
    then the generator through it. Returns the step's losses and D's mean outputs as tensors on the
    device, and whether D was skipped: nothing is read on the host but the previous step's D loss.
    The forward passes run in ``gan.autocast()``; the losses are taken in float32."""
    bs, policy = real.shape[0], "" if o.diffaugment == "none" else o.diffaugment
    z = torch.randn(bs, o.latent_dim, generator=rng, device=real.device)
    fake_y = None
    if o.num_classes:  # the two halves of the batch share labels (pairs for the mode-seeking term)
        half = torch.randint(0, o.num_classes, (bs - bs // 2,), generator=rng, device=real.device)
        fake_y = torch.cat([half, half[: bs // 2]])
    with gan.autocast():
        fake = gan.g(z, fake_y)
    aux = o.aux_classifier if fake_y is not None else 0

    def judged(images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's real/fake logits, and its class logits when the class head is trained (else None), in float32."""
        with gan.autocast():
            logits, classes = gan.d(images, labels, classes=True) if aux else (gan.d(images, labels), None)
        return logits.float(), None if classes is None else classes.float()

    # Discriminator: real -> 1, generated -> 0 (and, with the class head, the real images' labels).
    real_logits, real_classes = judged(diff_augment(real, policy, rng), y)
    with gan.autocast():
        fake_logits = gan.d(diff_augment(fake.detach(), policy, rng), fake_y).float()
    loss_d = d_loss(o.loss, real_logits, fake_logits, o.label_smoothing)
    if aux:
        loss_d = loss_d + aux * F.cross_entropy(real_classes, y)
    if o.r1 > 0 and gan.step % o.r1_every == 0:  # lazy R1: every r1_every steps, that much stronger
        sharp = real.detach().requires_grad_(True)
        with gan.autocast():
            logits = gan.d(sharp, y)
        loss_d = loss_d + o.r1 / 2 * o.r1_every * r1_penalty(sharp, logits)
    # the skip rule reads the previous step's loss (a NaN skips, as before): the step's one read
    skipped = not bool(gan.last_d_loss >= o.d_skip_below)
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
    loss_g = g_loss(o.loss, fake_for_g)
    if aux:
        loss_g = loss_g + aux * F.cross_entropy(fake_classes, fake_y)
    if o.mode_seeking > 0:
        h, images = bs // 2, fake.float()
        loss_g = loss_g + o.mode_seeking * mode_seeking_loss(images[:h], images[bs - h :], z[:h], z[bs - h :])
    gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    average_gradients(gan.world, gan.g)
    gan.opt_g.step()
    gan.d.requires_grad_(True)
    gan.ema.update(gan.g, gan.step)
    scalars = [gan.last_d_loss, loss_g, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()]
    return {"scalars": torch.stack([t.detach().to(torch.float64) for t in scalars]), "d_skipped": int(skipped)}


def steps_per_epoch(o: GanOptions, n: int, world: World) -> int:
    return n // (o.batch_size * world.size)


def learning_rate_scale(o: GanOptions, epoch: int) -> float:
    """The learning rates' factor in (0-based) ``epoch``: 1, then over the last ``lr_decay`` share of
    the epochs a linear fall that would reach 0 after the last (1/k in the k-th epoch from the end)."""
    decaying = round(o.lr_decay * o.epochs)
    return min(1.0, (o.epochs - epoch) / decaying) if decaying else 1.0


def run_epoch(gan: Gan, o: GanOptions, data: DatasetSplit, device: torch.device, bar: tqdm) -> dict:
    """One pass over the training split in the epoch's own order, at the epoch's learning rates; the
    sums of the steps' scalars (summed on the device, read once at the end). In a distributed run
    each step's batches are consecutive slices of the order, one per rank."""
    scale = learning_rate_scale(o, gan.epoch)
    for opt, lr in ((gan.opt_g, o.lr_g), (gan.opt_d, o.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * scale
    images, labels = data.train.images, data.train.labels
    n, bs, world = len(images), o.batch_size, gan.world
    order = torch.randperm(n, generator=torch.Generator().manual_seed(o.seed * 7919 + gan.epoch))
    sums, skipped = torch.zeros(len(SCALARS), dtype=torch.float64, device=device), 0
    gan.g.train(), gan.d.train()
    for i in range(steps_per_epoch(o, n, world)):
        gan.step += 1
        rng = step_generator(o.seed, gan.step, device, world.rank)
        first = (i * world.size + world.rank) * bs
        idx = order[first : first + bs]
        y = labels[idx].to(device) if o.num_classes else None
        real = as_float(images[idx].to(device)).contiguous(memory_format=torch.channels_last)  # uint8 moves
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
