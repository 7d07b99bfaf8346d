"""The project's path in miniature, shared by the tests and the tooling beside it (`make smoke`,
`make bench`, `make soak`): tiny trainings, export, and a real `bentoml serve` process on a free
loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
TINY_GAN_ARGS = [
    "--dataset",
    "fake",
    "--epochs",
    "2",
    "--g-channels",
    "8",
    "--d-channels",
    "8",
    "--batch-size",
    "32",
    "--classifier-epochs",
    "1",
    "--calibration-latents",
    "4096",
]


def train_tiny_gan(runs_root: Path, name: str = "tiny", extra: list[str] | None = None) -> Path:
    from training.gan.train import main

    code = main([*TINY_GAN_ARGS, "--runs-root", str(runs_root), "--name", name, *(extra or [])])
    assert code == 0, f"tiny GAN training failed with exit code {code}"
    return runs_root / "gan" / name


TINY_STYLE_ARGS = [
    "--vgg",
    "random",
    "--device",
    "cpu",
    "--encoder-layer",
    "relu3_1",
    "--crop",
    "32",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--sample-side",
    "32",
    "--sample-every",
    "0",
    "--checkpoint-every",
    "0",
    "--steps",
    "4",
]


def train_tiny_style(runs_root: Path, name: str = "tiny") -> Path:
    """A few reconstruction-decoder steps on RANDOM VGG weights: exercises the whole path, stylises nothing."""
    from training.style.train import main

    code = main([*TINY_STYLE_ARGS, "--runs-root", str(runs_root), "--name", name], log=lambda line: None)
    assert code == 0, f"tiny style training failed with exit code {code}"
    return runs_root / "style" / name


def export(
    out: Path, gan_run: Path | None = None, style_run: Path | None = None, styles_dir: Path | None = None
) -> Path:
    from training.export import export_all

    # the tiny style run's coarsest level (relu3_1) on a Laplacian pyramid whose 1/2 size the next
    # level (relu2_1) paints, as the quick profile's relu2_1 and relu1_1 do by default: the served
    # graph has the pyramid's larger size multiple (16) and both kinds of pyramid pass
    export_all(gan_run, style_run, out, styles_dir, style_options={"coarse_scales": [4], "fine_scales": [2]})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve` over an export folder, on a free loopback port; ready when /readyz says so."""

    def __init__(self, exports: Path, log_path: Path, startup_timeout: float = 120.0, env: dict | None = None):
        self.exports, self.log_path, self.startup_timeout = exports, log_path, startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Each server its own BENTOML_HOME: every `bentoml serve` empties the Prometheus multiprocess
        # folder under it at start, which would wipe the metrics of the servers already running.
        self.env = {
            **os.environ,
            "ATELIER_EXPORTS": str(exports),
            "BENTOML_DO_NOT_TRACK": "true",
            "BENTOML_HOME": str(log_path.parent / f"bentoml-home-{self.port}"),
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        bentoml = Path(sys.executable).parent / "bentoml"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(bentoml), "serve", "service.service:Atelier", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.5)
        tail = self.log_tail()
        self.__exit__()
        raise RuntimeError(f"bentoml serve not ready after {self.startup_timeout:.0f} s:\n{tail}")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def build_bento(exports: Path, work: Path) -> Path:
    """`bentoml build` of the service with ``exports`` (offline: no lock step), in its own
    BENTOML_HOME under ``work``; returns the bento's folder (bento.yaml, src/, env/docker/)."""
    context = work / "context"
    context.mkdir()
    shutil.copytree(REPO / "service", context / "service", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(exports, context / "exports")
    for name in ("bentofile.yaml", "requirements-bento.txt"):
        shutil.copy(REPO / name, context / name)
    env = {
        **os.environ,
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(context),
    }
    bentoml = Path(sys.executable).parent / "bentoml"
    built = subprocess.run(
        [str(bentoml), "build", str(context), "--output", "tag"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (bento,) = (work / "bentoml" / "bentos" / "atelier").glob("*/bento.yaml")
    return bento.parent


def run_fresh(code: str, timeout: float = 300, cgroup: Path | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with the repository importable: for what a process does
    once (which modules an import loads, messages printed the first time, threads it starts).
    ``cgroup``: a cgroup folder the interpreter runs in from its first instruction."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", code]
    if cgroup is not None:  # the shell joins the group, then becomes the interpreter
        command = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$0" -c "$1"', sys.executable, code]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
