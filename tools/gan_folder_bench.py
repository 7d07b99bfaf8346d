"""Peak memory and load time of a large GAN folder dataset (docs/gan.md, "A folder of your own images").

    python tools/gan_folder_bench.py --folder /tmp/gan-folder-50k --make 50000   # write the folder once
    python tools/gan_folder_bench.py --folder /tmp/gan-folder-50k                 # load it: time, peak RSS
    python tools/gan_folder_bench.py --folder /tmp/gan-folder-50k --train         # and a short training run

The folder: ``--make N`` JPEGs of 160x120 (quality 90) in ten class folders, each a few soft
colour blobs whose layout depends on the class, drawn from a fixed seed (the same folder every
time). Each measurement runs in a fresh process, and its peak resident memory (``ru_maxrss``) is
reported beside that of the same process right after its imports, so the difference is the data's.
Run it with ``PYTHONPATH`` at another checkout to measure that version's loader.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # run as a script from the repository (PYTHONPATH: another checkout's code)
    sys.path.insert(0, str(REPO))
CLASSES = 10
SIZE = (160, 120)


def make_folder(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs, ``n / 10`` per class folder ``c0`` .. ``c9``; a file already there is kept."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        c = i % CLASSES
        path = folder / f"c{c}" / f"{i:06d}.jpg"
        if path.exists():
            rng.random(16)  # the same draws as when it was written
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        r = rng.random(16)
        image = np.zeros((h, w, 3))
        for k in range(3):  # three blobs on a ring whose angle is the class's
            angle = 2 * np.pi * (c / CLASSES + k / 3) + 0.3 * r[k]
            cx, cy = w / 2 + 0.3 * w * np.cos(angle), h / 2 + 0.3 * h * np.sin(angle)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (10 + 20 * r[3 + k]) ** 2))
            image += blob[..., None] * r[6 + 3 * k : 9 + 3 * k][None, None, :]
        pixels = (255 * np.clip(image + 0.1 * r[15], 0, 1)).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def load_once(folder: Path, image_size: int) -> dict:
    """In this process: load the folder as the trainer does, and what it took."""
    import torch

    from training.gan.data import load_dataset

    after_imports = peak_rss_mb()
    t0 = time.perf_counter()
    split = load_dataset(f"folder:{folder}", image_size, 3)
    seconds = time.perf_counter() - t0
    images = (split.train.images, split.held_out.images)
    return {
        "images": sum(len(x) for x in images),
        "image_size": image_size,
        "dtype": str(images[0].dtype).removeprefix("torch."),
        "held_mb": round(sum(x.numel() * x.element_size() for x in images) / 2**20, 1),
        "load_seconds": round(seconds, 2),
        "rss_after_imports_mb": round(after_imports, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
    }


def in_fresh_process(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# A short training run on the folder (one epoch, small models): what the whole trainer holds.
TRAIN_ARGS = ["--epochs", "1", "--g-channels", "16", "--d-channels", "16", "--classifier-epochs", "1"]
TRAIN_ARGS += ["--eval-sets", "1", "--calibration-latents", "4096"]


def train_once(folder: Path, image_size: int, runs: Path) -> dict:
    """In this process: the trainer's main on the folder, its wall time and this process's peak RSS."""
    import contextlib

    from training.gan.train import main

    args = ["--dataset", f"folder:{folder}", "--image-size", str(image_size), *TRAIN_ARGS, "--runs-root", str(runs)]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        code = main(args)
    return {
        "train_exit_code": code,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "train_peak_rss_mb": round(peak_rss_mb(), 1),
        "train_args": " ".join(args),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--make", type=int, default=0, help="first write this many images into --folder")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="loads, each in a fresh process")
    p.add_argument("--train", action="store_true", help="also a one-epoch training run on the folder")
    p.add_argument("--runs-root", type=Path, default=Path("/tmp/gan-folder-bench-runs"))
    p.add_argument("--child", choices=("load", "train"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "load":
        print(json.dumps(load_once(args.folder, args.image_size)))
        return 0
    if args.child == "train":
        print(json.dumps(train_once(args.folder, args.image_size, args.runs_root)))
        return 0
    if args.make:
        t0 = time.perf_counter()
        make_folder(args.folder, args.make)
        print(f"folder {args.folder}: {args.make} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    child = ["--folder", str(args.folder), "--image-size", str(args.image_size), "--runs-root", str(args.runs_root)]
    for _ in range(args.repeats):
        print(json.dumps(in_fresh_process([*child, "--child", "load"])), flush=True)
    if args.train:
        print(json.dumps(in_fresh_process([*child, "--child", "train"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
