"""The trainers under torchrun: 2 processes with gloo on the CPU, as a user on a multi-GPU node
runs them with NCCL. The run must be one run: weights identical on every rank at every step (the
trainer checks it at every checkpoint and stops if not), one run folder written by rank 0 alone,
finite falling losses, and a resumed 2-process run that ends where an uninterrupted one ends."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from bench.hostile_images import gradient
from bench.pipeline import REPO, TINY_GAN_ARGS, TINY_STYLE_ARGS
from training.runs import load_checkpoint


def torchrun(module: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def style(root: Path, name: str, *extra: str) -> Path:
    # every step a checkpoint: the trainer compares the ranks' weights at each one
    args = [*TINY_STYLE_ARGS, "--runs-root", str(root), "--name", name, "--checkpoint-every", "1"]
    torchrun("training.style.train", *args, *extra)
    return root / "style" / name


def test_two_style_processes_train_one_run(tmp_path):
    content = tmp_path / "photos"  # one picture: a task a few steps visibly learn
    content.mkdir()
    Image.fromarray(gradient(96, 96)).save(content / "gradient.png")
    run = style(tmp_path, "two", "--steps", "16", "--lr", "1e-3", "--log-every", "4", "--content-dir", str(content))
    assert sorted(p.name for p in (tmp_path / "style").iterdir()) == ["latest", "two"]  # one folder, from rank 0
    assert json.loads((run / "options.json").read_text())["processes"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12, 16]  # written once, not once per rank
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses


def test_a_resumed_two_process_style_run_ends_where_an_uninterrupted_one_ends(tmp_path):
    whole = load_checkpoint(style(tmp_path, "whole", "--steps", "4") / "checkpoint.pt")
    part = style(tmp_path, "part", "--steps", "2")
    torchrun("training.style.train", "--resume", str(part), "--steps", "4")
    resumed = load_checkpoint(part / "checkpoint.pt")
    assert resumed["step"] == whole["step"] == 4
    for name, tensor in whole["decoders"].items():
        assert torch.equal(tensor, resumed["decoders"][name]), name


def gan(root: Path, name: str, *extra: str) -> Path:
    torchrun("training.gan.train", *TINY_GAN_ARGS, "--runs-root", str(root), "--name", name, *extra)
    return root / "gan" / name


def test_two_gan_processes_train_one_run_and_resume_exactly(tmp_path):
    """Weights checked identical on both ranks after every epoch; one folder; a run stopped after
    its first epoch and resumed ends where an uninterrupted run ends."""
    whole = gan(tmp_path, "whole", "--epochs", "3")
    assert sorted(p.name for p in (tmp_path / "gan").iterdir()) == ["latest", "whole"]
    assert json.loads((whole / "options.json").read_text())["processes"] == 2
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in records for k in ("loss_d", "loss_g", "fid"))
    part = gan(tmp_path, "part", "--epochs", "1")
    torchrun("training.gan.train", "--resume", str(part), "--epochs", "3")
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(part / "checkpoint.pt")
    assert a["step"] == b["step"] and b["epoch"] == 3
    for key in ("generator", "generator_ema", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"


def test_each_rank_draws_its_own_batches():
    from training.style.data import TrainingImages, content_source

    source = content_source(None)
    rank0, rank1 = (TrainingImages(source, crop=32, batch_size=2, seed=3, shard=s) for s in (0, 1))
    assert not torch.equal(rank0[5], rank1[5])


def _replica_check(rank: int, port: int, differ: bool, results) -> None:
    import torch.distributed as dist

    from training.distributed import World, check_replicas

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    module = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(module.bias, 0.5)
    torch.nn.init.constant_(module.weight, 1.0 + (rank * 1e-6 if differ else 0.0))
    try:
        check_replicas(World(rank, 2, rank), module, torch.device("cpu"))
        results.put((rank, "same"))
    except RuntimeError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def test_the_replica_check_stops_a_run_whose_ranks_diverged():
    """The check behind "identical on every rank" can fail: weights one part in a million apart
    are caught on both ranks."""
    import torch.multiprocessing as mp

    from bench.pipeline import free_port

    for differ, expected in ((False, "same"), (True, "the replicas' weights differ")):
        results = mp.get_context("spawn").SimpleQueue()
        mp.start_processes(_replica_check, args=(free_port(), differ, results), nprocs=2, start_method="spawn")
        answers = sorted(results.get() for _ in range(2))
        assert [rank for rank, _ in answers] == [0, 1]
        assert all(expected in message for _, message in answers), answers
