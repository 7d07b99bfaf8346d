"""ONNX Runtime sessions: CUDA first when present, CPU as fallback, and the provider actually used."""

from __future__ import annotations

import ctypes
import logging
import os
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


def open_session(path: Path, providers: list[str], log=logger.warning, *, arena: bool = True,
                 spinning: bool = True) -> ort.InferenceSession:
    """A session over ``path`` with the given provider preference.

    ``arena=False`` turns ONNX Runtime's CPU memory arena off: the arena keeps the high-water mark
    of every input shape it has seen (10.8 GB after six 2048-px stylisations, measured), so
    sessions that take arbitrary large shapes run without it and give memory back after each call
    (at ~1.6x the time at 512 px, hence only for large inputs). ``spinning=False`` stops idle
    pool threads from busy-waiting, which would take cores from the cheap endpoints.

    ONNX Runtime drops a provider whose libraries are missing (CUDA on a CPU machine) with a
    noisy log of its own; we silence that and say it once, plainly. ``session.get_providers()[0]``
    is what actually runs, and the service reports that.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not arena:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def keep_large_blocks_returnable(threshold: int = 4 * 2**20) -> None:
    """Allocate blocks of ``threshold`` bytes and more with mmap, always (glibc ``mallopt``).

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), after
    which image-sized buffers land in the heap and fragment it; with the threshold fixed they are
    unmapped, and given back, when freed. A no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable, or what the cgroup (container) limit leaves if lower."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:  # cgroup v2: a container's limit and what it already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            left = int(limit) - used
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available if available is not None else 4 * 2**30


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
