"""`make bench-train`: training throughput of the style trainer in 1 and N processes (torchrun),
on whatever the machine has (CUDA GPUs with NCCL, else CPU processes with gloo), and the scaling
efficiency as a ratio measured in the same run.

    python -m bench.bench_train                    # N = the GPUs, or 2 CPU processes
    python -m bench.bench_train --nproc 4 --steps 200 --profile full

Each configuration trains from scratch with random VGG weights (the same work as real weights,
no download) for ``--steps`` steps; the first ``--warmup`` steps are not timed. Throughput is
images per second over all processes (steps/s of each rank x batch size x processes);
efficiency = throughput(N) / (N x throughput(1)). On a machine whose N processes share the cores
one process already used, efficiency well below 1 is the expected answer, not a fault.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.pipeline import REPO


def measure(nproc: int, profile: str, steps: int, warmup: int, work: Path) -> dict:
    name = f"p{nproc}"
    args = [
        "--profile",
        profile,
        "--vgg",
        "random",
        "--steps",
        str(steps),
        "--log-every",
        str(warmup),
        "--sample-every",
        "0",
        "--checkpoint-every",
        "0",
        "--runs-root",
        str(work),
        "--name",
        name,
    ]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command = (
        [*launcher, "-m", "training.style.train", *args]
        if nproc > 1
        else [sys.executable, "-m", "training.style.train", *args]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if nproc > 1 and not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))  # the cores shared out
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{nproc} process(es) failed:\n{done.stderr[-3000:]}")
    run = work / "style" / name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup]
    steps_per_s = sum(r["steps_per_s"] for r in timed) / len(timed)
    batch = json.loads((run / "options.json").read_text())["batch_size"]
    return {"processes": nproc, "steps_per_s_per_rank": steps_per_s, "images_per_s": steps_per_s * batch * nproc}


def main(argv: list[str] | None = None) -> int:
    gpus = torch.cuda.device_count()
    p = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=gpus if gpus > 1 else 2, help="processes for the N run")
    p.add_argument("--profile", default="quick", choices=("quick", "full"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=20, help="steps not timed (also the logging interval)")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "bench-train.json")
    args = p.parse_args(argv)
    device = torch.cuda.get_device_name(0) if gpus else f"CPU ({os.cpu_count()} cores)"
    with tempfile.TemporaryDirectory() as tmp:
        one = measure(1, args.profile, args.steps, args.warmup, Path(tmp))
        many = measure(args.nproc, args.profile, args.steps, args.warmup, Path(tmp))
    efficiency = many["images_per_s"] / (args.nproc * one["images_per_s"])
    print(f"style trainer, profile {args.profile}, {device}, {'NCCL' if gpus else 'gloo'}")
    print(f"{'processes':>9} {'steps/s per rank':>17} {'images/s':>9}")
    for row in (one, many):
        print(f"{row['processes']:>9} {row['steps_per_s_per_rank']:>17.2f} {row['images_per_s']:>9.1f}")
    print(f"scaling efficiency: {efficiency:.2f} (throughput with {args.nproc} / ({args.nproc} x with 1))")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "profile": args.profile, "runs": [one, many], "efficiency": efficiency}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
