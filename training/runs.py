"""Run folders, atomic files, checkpoints, metrics logs and device choice, shared by every trainer,
and the skeleton of a trainer's command: options for a new run or a resumed one, refused before
any work with exit code 2; the training, which Ctrl-C ends with exit code 130.

A run folder holds: ``options.json`` (resolved options), ``metrics.jsonl`` (one JSON object per
logged step), ``checkpoint.pt`` (written atomically), sample images and a loss plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

CHECKPOINT = "checkpoint.pt"  # every run folder's checkpoint, whichever the trainer
# Every trainer's exit codes: done; options refused before any work (argparse's own code for a
# usage error); interrupted by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_DONE = 0
EXIT_BAD_OPTIONS = 2
EXIT_INTERRUPTED = 130
# What a trainer's command line carries besides its options.
COMMAND_ONLY = ("resume", "dry_run")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; exports are read by other users (containers)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def new_run_dir(root: Path, kind: str, name: str | None = None) -> Path:
    """Create ``root/kind/<name or timestamp>`` and point ``root/kind/latest`` at it."""
    base = Path(root) / kind
    base.mkdir(parents=True, exist_ok=True)
    stem = name or time.strftime("%Y%m%d-%H%M%S")
    run = base / stem
    suffix = 1
    while run.exists():
        suffix += 1
        run = base / f"{stem}-{suffix}"
    run.mkdir()
    latest = base / "latest"
    tmp = base / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.name)
    os.replace(tmp, latest)
    return run


def explicit_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The options given on the command line (dest -> value), not those left at their defaults.
    argparse fills a default only where the namespace lacks the attribute: parse once more into a
    namespace that already holds a marker for every option, and keep what the command line set."""
    unset = object()
    dests = vars(parser.parse_args(argv))
    given = vars(parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(dests, unset))))
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not unset}


def resumed_options(stored: dict[str, Any], given: dict[str, Any], may_change: tuple[str, ...]) -> dict[str, Any]:
    """A resumed run's options: its own, with the few in ``may_change`` taken from ``given``. Any
    other option given with a value other than the run's is refused (ValueError), not ignored: the
    run would not be the one its options say. The same rule for every trainer."""
    for key, value in given.items():
        if key not in may_change and key in stored and stored[key] != value:
            allowed = ", ".join(f"--{k.replace('_', '-')}" for k in may_change)
            raise ValueError(
                f"--{key.replace('_', '-')} {value} differs from the run's {stored[key]!r}: "
                f"a resumed run keeps its training options (it may change {allowed})"
            )
    return {**stored, **{k: v for k, v in given.items() if k in may_change}}


Options = TypeVar("Options")


@dataclass(frozen=True)
class Start(Generic[Options]):
    """What a trainer's command line asks for: the options, and for ``--resume`` the run folder and
    its checkpoint (else None)."""

    options: Options
    resume: Path | None
    checkpoint: dict[str, Any] | None
    dry_run: bool


@contextmanager
def refused_as_usage(parser: argparse.ArgumentParser) -> Iterator[None]:
    """A ValueError inside becomes the usage, the message and exit code 2 (``EXIT_BAD_OPTIONS``)."""
    try:
        yield
    except ValueError as e:
        parser.error(str(e))


def start_options(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    new: Callable[[argparse.Namespace], Options],
    resumed: Callable[[dict[str, Any], dict[str, Any]], Options],
    load: Callable[[Path], dict[str, Any]] | None = None,
) -> Start[Options]:
    """Parse ``argv``: a new run's options are ``new(args)``; ``--resume RUN``'s are
    ``resumed(checkpoint, given)``, ``given`` being the options set on the command line (see
    ``resumed_options`` for the rule). A ValueError from either is refused as a usage error."""
    args = parser.parse_args(argv)
    with refused_as_usage(parser):
        if args.resume is None:
            return Start(new(args), None, None, args.dry_run)
        path = Path(args.resume) / CHECKPOINT
        if not path.is_file():
            raise ValueError(f"--resume {args.resume}: no {CHECKPOINT} there")
        checkpoint = (load or load_checkpoint)(path)
        given = {k: v for k, v in explicit_options(parser, argv).items() if k not in COMMAND_ONLY}
        return Start(resumed(checkpoint, given), Path(args.resume), checkpoint, args.dry_run)


def until_interrupted(train: Callable[[], int], interrupted: Callable[[], str], main: bool = True) -> int:
    """``train()``'s exit code; on Ctrl-C, ``EXIT_INTERRUPTED`` after the message ``interrupted()``
    (how to resume) on stderr, from the main process only."""
    try:
        return train()
    except KeyboardInterrupt:
        if main:
            print(f"\n{interrupted()}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save CPU tensors / plain values atomically; ``state`` holds state_dicts, step and options."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(_to_cpu(state), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class MetricsLog:
    """Append-only jsonl log; ``read()`` returns every record (used for plots and resume)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run repeats them)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present, else CPU; an explicit name is honoured or refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def plot_losses(records: list[dict[str, Any]], keys: list[str], path: Path, title: str) -> None:
    """Plot the given keys of the metrics records against ``step`` into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
