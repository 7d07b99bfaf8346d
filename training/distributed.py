"""Training on several processes, as launched by ``torchrun`` (one process per GPU, or per CPU
worker with gloo), shared by every trainer.

    torchrun --nproc_per_node 4 -m training.style.train --profile full
    torchrun --nnodes 2 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
             --nproc_per_node 8 -m training.gan.train --profile full

A trainer started without torchrun is one process of a world of one: nothing here changes it.
Under torchrun (``WORLD_SIZE`` > 1) each process joins the process group (NCCL on CUDA, gloo on
the CPU), takes the GPU of its ``LOCAL_RANK``, trains on its own shard of the data stream, and
only rank 0 writes the run folder (options, metrics, samples, checkpoints).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from training.runs import pick_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


ONE = World()  # a process trained alone


def join(device_name: str) -> tuple[World, torch.device]:
    """This process's world and device: torchrun's environment, or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if size == 1:
        return ONE, device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
    )
    return world, device


def leave(world: World, finished: bool) -> None:
    """Tear the process group down. After a finished run every rank first waits for the others:
    rank 0 writes the run folder after the last collective, while the other ranks would already
    tear their side down and exit (in this project's tests a rank 1 aborted once, under load, in
    a 4-step 2-process run: "terminate called without an active exception"; not reproduced in 5
    more). After an error nothing is torn down: the other ranks may still be inside a collective,
    where a teardown can hang, and torchrun stops them anyway."""
    if not (world.distributed and dist.is_initialized()) or not finished:
        return
    dist.barrier()
    dist.destroy_process_group()


def run_then_leave(world: World, train: Callable[[], int]) -> int:
    """``train()``'s exit code, then ``leave``: the run counts as finished only with exit code 0
    (an exception, Ctrl-C's included, or an interrupted run's 130 leaves without a teardown)."""
    code = 1
    try:
        code = train()
        return code
    finally:
        leave(world, finished=code == 0)


def from_main(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a run folder's path, a decision), any picklable object."""
    if not world.distributed:
        return value
    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across(world: World, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over the ranks, in float64 on its device (the same on every rank:
    a decision they must agree on). Nothing is read on the host: with NCCL the all-reduce is queued
    on the GPU like any kernel, and the caller reads the result when it needs it."""
    t = value.detach().to(torch.float64, copy=True)  # the all-reduce writes into it
    if not world.distributed:
        return t
    dist.all_reduce(t)
    return t / world.size


def check_replicas(world: World, module: torch.nn.Module, device: torch.device) -> None:
    """Raise if the ranks' copies of ``module``'s parameters differ (they must stay bit-identical:
    DDP averages the gradients, every rank applies the same update). One all-reduce of a checksum."""
    if not world.distributed:
        return
    with torch.no_grad():
        checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).to(device)
    low, high = checksum.clone(), checksum.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if float(low) != float(high):
        raise RuntimeError(
            f"rank {world.rank}: the replicas' weights differ (checksums {float(low)!r} .. {float(high)!r})"
        )


def average_gradients(world: World, module: torch.nn.Module) -> None:
    """Average ``module``'s gradients over the ranks, after a backward pass: what DDP does inside
    its backward, done by hand where a step runs a module several times before one backward (the
    GAN's discriminator sees real and generated batches, then serves the generator's loss)."""
    if not world.distributed:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def share_buffers(world: World, module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank."""
    if not world.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
