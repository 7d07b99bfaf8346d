"""ONNX Runtime sessions: CUDA first when present, CPU as fallback, and the provider actually used."""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger("atelier")

PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def parse_providers(spec: str) -> list[str]:
    """``cuda,cpu`` -> ONNX Runtime provider names, keeping only those this build offers."""
    wanted = [s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in PROVIDER_NAMES]
    if unknown or not wanted:
        raise ValueError(f"ATELIER_PROVIDERS={spec!r}: use a comma-separated list of {', '.join(PROVIDER_NAMES)}")
    available = set(ort.get_available_providers())
    return [PROVIDER_NAMES[w] for w in wanted if PROVIDER_NAMES[w] in available] or ["CPUExecutionProvider"]


def open_session(path: Path, providers: list[str], log=logger.warning) -> ort.InferenceSession:
    """A session over ``path`` with the given provider preference.

    ONNX Runtime drops a provider whose libraries are missing (CUDA on a CPU machine) with a
    noisy log of its own; we silence that and say it once, plainly. ``session.get_providers()[0]``
    is what actually runs, and the service reports that.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ort.set_default_logger_severity(4)  # fatal only while the providers are probed
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    finally:
        ort.set_default_logger_severity(2)
    if session.get_providers()[0] != providers[0]:
        log(f"{path.name}: {providers[0]} could not be started (missing CUDA/cuDNN libraries or no GPU); "
            f"running on {session.get_providers()[0]}")
    return session


def device_name(provider: str) -> str:
    """The GPU's name under CUDA (from nvidia-smi), else the CPU model."""
    if provider == "CUDAExecutionProvider" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                                 capture_output=True, text=True, timeout=10, check=True)
            return out.stdout.strip()
        except (subprocess.SubprocessError, OSError):
            return "CUDA GPU (name unavailable)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
