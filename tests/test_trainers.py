"""What both trainers share (training/runs.py): Ctrl-C ends a run with exit code 130 and says how
to continue it, as a shell user sees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.pipeline import REPO, TINY_GAN_ARGS, TINY_STYLE_ARGS


@pytest.mark.parametrize(
    "module, args, kind, progress",
    [
        ("training.gan.train", [*TINY_GAN_ARGS, "--epochs", "200"], "gan", "checkpoint.pt"),
        ("training.style.train", [*TINY_STYLE_ARGS, "--steps", "100000", "--log-every", "1"], "style", "metrics.jsonl"),
    ],
)
def test_ctrl_c_ends_a_run_with_exit_code_130_and_says_how_to_resume(tmp_path, module, args, kind, progress):
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args, "--runs-root", str(tmp_path), "--name", "stopped"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = tmp_path / kind / "stopped"
    deadline = time.monotonic() + 120
    while not (run / progress).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "continue from the last checkpoint" in err and f"--resume {run}" in err
    assert "Traceback" not in err
