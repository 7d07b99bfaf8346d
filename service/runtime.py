"""ONNX Runtime sessions: CUDA first when present, CPU as fallback, and the provider actually used."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import math
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from service.settings import PROVIDER_WORDS, Settings, parse_cuda_options

logger = logging.getLogger("atelier")

PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
assert tuple(PROVIDER_NAMES) == PROVIDER_WORDS
CUDA_PROVIDER_LIBRARY = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"


# ONNX Runtime's default, an exhaustive cuDNN search per input shape, made mixed upload sizes many
# times slower (`python -m bench.cuda_options`; docs/performance.md, "On a GPU"). Operators whose
# every input has one shape can set cudnn_conv_algo_search=EXHAUSTIVE.
CUDA_DEFAULTS = {"cudnn_conv_algo_search": "DEFAULT"}


class ProvidersUnavailable(RuntimeError):
    """``ATELIER_PROVIDERS`` asks for a provider that cannot start here, with no fallback allowed."""


@dataclass(frozen=True)
class Providers:
    """What ``ATELIER_PROVIDERS`` asked for and what this machine can give.

    ``names`` is what sessions are opened with (unusable providers already dropped, so ONNX
    Runtime never tries them); ``fallback`` says why the first choice was dropped, or is None;
    ``cuda_options``: what ``ATELIER_CUDA_OPTIONS`` sets (``parse_cuda_options``)."""

    spec: str
    names: list[str]
    fallback: str | None = None
    cuda_options: dict[str, str] = field(default_factory=dict)


def cuda_problem() -> str | None:
    """None when ONNX Runtime's CUDA provider can start here, else why not, naming what is missing.

    Loads the CUDA 13 and cuDNN 9 libraries that ``onnxruntime-gpu[cuda,cudnn]`` installs as pip
    wheels (``onnxruntime.preload_dlls``, no torch needed), then the provider library itself: the
    dynamic loader's message names the first library still missing. The driver (``libcuda.so.1``)
    comes from the host; in a container, from ``docker run --gpus all``."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints each library it cannot find
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - a failed preload shows up in the probe below
                pass
    try:
        ctypes.CDLL(str(CUDA_PROVIDER_LIBRARY))
    except OSError as e:
        return (
            f"CUDA/cuDNN library missing: {e} (pip install 'onnxruntime-gpu[cuda,cudnn]', "
            f"as requirements-bento.txt does)"
        )
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found): no GPU visible to this process (docker run --gpus all)"
    return None


def choose_providers(spec: str, log=logger.warning, cuda_options: str = "") -> Providers:
    """``ATELIER_PROVIDERS`` (``cuda,cpu``, ``cuda``, ``cpu``) -> the providers to open sessions with,
    and ``ATELIER_CUDA_OPTIONS`` checked (even where CUDA will not run: a typo shows on any machine).

    ``cuda`` alone means "the GPU or nothing": when CUDA cannot start this raises
    ``ProvidersUnavailable`` with the reason, and the service refuses to start. With a fallback
    listed, an unusable CUDA is dropped and the reason logged (and reported by the service)."""
    requested = [s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [w for w in requested if w not in PROVIDER_NAMES]
    if unknown or not requested:
        raise ValueError(f"ATELIER_PROVIDERS={spec!r}: use a comma-separated list of {', '.join(PROVIDER_NAMES)}")
    options = {**CUDA_DEFAULTS, **parse_cuda_options(cuda_options)}
    wanted, fallback = requested, None
    if "cuda" in requested and (problem := cuda_problem()) is not None:
        wanted = [w for w in requested if w != "cuda"]  # what is left is the CPU, or nothing
        if not wanted:
            raise ProvidersUnavailable(
                f"ATELIER_PROVIDERS=cuda: CUDA cannot start: {problem}. "
                "Set ATELIER_PROVIDERS=cuda,cpu to allow running on the CPU."
            )
        fallback = f"CUDAExecutionProvider unavailable ({problem}); running on CPUExecutionProvider"
        log(fallback)
    names = [PROVIDER_NAMES[w] for w in wanted]
    return Providers(spec=",".join(requested), names=names, fallback=fallback, cuda_options=options)


def providers_from_settings(settings: Settings, log=logger.warning) -> Providers:
    """``choose_providers`` of ``ATELIER_PROVIDERS`` and ``ATELIER_CUDA_OPTIONS``: what the service
    opens its sessions with, and ``make bench`` the same."""
    return choose_providers(settings.providers, log, cuda_options=settings.cuda_options)


def open_session(
    path: Path,
    providers: list[str],
    log=logger.warning,
    *,
    arena: bool = True,
    spinning: bool = True,
    cuda_options: dict[str, str] | None = None,
    threads: int | None = None,
) -> ort.InferenceSession:
    """A session over ``path`` with the given provider preference.

    ``arena=False`` turns ONNX Runtime's CPU memory arena off: the arena keeps the high-water mark
    of every input shape it has seen (10.8 GB after six 2048-px stylisations, measured), so
    sessions that take arbitrary large shapes run without it and give memory back after each call
    (at ~1.6x the time at 512 px, hence only for large inputs). ``spinning=False`` stops idle
    pool threads from busy-waiting, which would take cores from the cheap endpoints.
    ``cuda_options`` go to the CUDA provider (``CUDA_OPTIONS``). ``threads``: the size of the
    session's intra-op pool (``cpu_budget``); None leaves it to ONNX Runtime (the host's cores).

    Providers that cannot start are normally dropped before this (``choose_providers``); should
    ONNX Runtime still fall back, it is said once, plainly. ``session.get_providers()[0]`` is
    what actually runs, and the service reports that.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    if not arena:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ort.set_default_logger_severity(4)  # fatal only while the providers are probed
    try:
        chosen = [(p, cuda_options) if p == PROVIDER_NAMES["cuda"] and cuda_options else p for p in providers]
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    finally:
        ort.set_default_logger_severity(2)
    if session.get_providers()[0] != providers[0]:
        if providers == [PROVIDER_NAMES["cuda"]]:
            raise ProvidersUnavailable(
                f"ATELIER_PROVIDERS=cuda: {path.name} could not start on CUDA "
                f"(ONNX Runtime fell back to {session.get_providers()[0]})"
            )
        log(
            f"{path.name}: {providers[0]} could not be started (missing CUDA/cuDNN libraries or no GPU); "
            f"running on {session.get_providers()[0]}"
        )
    return session


def device_name(provider: str) -> str:
    """The GPU's name under CUDA (NVML, which the driver provides; else nvidia-smi), else the CPU model."""
    if provider == "CUDAExecutionProvider":
        try:
            import pynvml  # nvidia-ml-py, a BentoML dependency

            pynvml.nvmlInit()
            try:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
                return name.decode() if isinstance(name, bytes) else name
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - no NVML: try nvidia-smi
            pass
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                )
                return out.stdout.strip()
            except (subprocess.SubprocessError, OSError):
                pass
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


def available_memory(proc: Path = Path("/proc/self")) -> int:
    """Bytes this process may still use: MemAvailable, or less where a cgroup's memory limit (a
    container's, a pod's; v1 or v2, its own group or one above it) leaves less."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    for group, v2 in cgroup_groups("memory", proc):
        left = _memory_left(group, v2)
        if left is not None:
            available = left if available is None else min(available, left)
    return available if available is not None else 4 * 2**30


def _memory_left(group: Path, v2: bool) -> int | None:
    """A group's memory limit less what it uses; None when it sets none (v1's "no limit" is a
    number near 2**63) or the files cannot be read."""
    limit_file, used_file = (
        ("memory.max", "memory.current") if v2 else ("memory.limit_in_bytes", "memory.usage_in_bytes")
    )
    try:
        limit = (group / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - int((group / used_file).read_text()))
    except (OSError, ValueError):
        return None


CPUS_ENV = "ATELIER_CPUS"


@dataclass(frozen=True)
class Cpus:
    """The cores this process sizes its thread pools to, and where that number came from."""

    count: int
    source: str


def cpu_budget(count: int | None = None, proc: Path = Path("/proc/self")) -> Cpus:
    """The cores to size thread pools to: ``count`` (``ATELIER_CPUS``, parsed by
    ``service.settings``) when given, else the affinity mask (which ``taskset`` and ``docker
    --cpuset-cpus`` narrow), lowered to the cgroup's CPU quota rounded up (``docker --cpus``, a
    Kubernetes CPU limit) when that is smaller.

    ONNX Runtime sizes each session's pool to the host's physical cores and sees neither: a pod
    limited to 2 CPUs on a 64-core node would otherwise run 64-thread pools, throttled. A CPU
    *request* without a limit sets no quota; the deployment passes it as ``ATELIER_CPUS``."""
    if count is not None:
        return Cpus(count, CPUS_ENV)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return Cpus(os.cpu_count() or 1, "os.cpu_count")
    quota = cgroup_cpu_quota(proc)
    if quota is not None and math.ceil(quota[0]) < affinity:
        return Cpus(max(1, math.ceil(quota[0])), f"cgroup CPU quota {quota[0]:g} ({quota[1]})")
    return Cpus(affinity, "affinity")


def cgroup_groups(controller: str, proc: Path = Path("/proc/self")) -> list[tuple[Path, bool]]:
    """The folders of this process's cgroup for ``controller`` and of every group above it, up to
    what its mount shows, own group first, each with whether it is cgroup v2 (one hierarchy for
    all controllers). Found from ``/proc/self/cgroup`` and ``/proc/self/mountinfo``, as the kernel
    shows them inside a container or out; empty when they cannot be read."""
    try:
        groups = [line.split(":", 2) for line in (proc / "cgroup").read_text().splitlines() if line.count(":") >= 2]
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return []
    found: list[tuple[Path, bool]] = []
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields, fs = before.split(), after.split()
        if len(fields) < 5 or len(fs) < 3:
            continue
        root, point = fields[3], fields[4]
        if fs[0] == "cgroup2":
            paths = [path for hid, controllers, path in groups if hid == "0" and not controllers]
        elif fs[0] == "cgroup" and controller in fs[2].split(","):
            paths = [path for _, controllers, path in groups if controller in controllers.split(",")]
        else:
            continue
        for path in paths:
            # The group's path is from the hierarchy's root; the mount shows the hierarchy from
            # `root` down. A container whose group is outside what it sees has its own at the mount point.
            if root == "/":
                inner = path
            elif path.startswith(root):
                inner = path[len(root) :]
            else:
                inner = ""
            group = Path(point) / inner.lstrip("/")
            while True:
                found.append((group, fs[0] == "cgroup2"))
                if group == Path(point) or group == group.parent:
                    break
                group = group.parent
    return found


def cgroup_cpu_quota(proc: Path = Path("/proc/self")) -> tuple[float, str] | None:
    """CPUs per period the process's cgroups allow, and the file that says so: the smallest quota
    from its own group up (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``). None when no group sets one or none can be read."""
    found = [q for group, v2 in cgroup_groups("cpu", proc) if (q := _read_quota(group, v2)) is not None]
    return min(found) if found else None


def _read_quota(group: Path, v2: bool) -> tuple[float, str] | None:
    try:
        if v2:
            quota, period = (group / "cpu.max").read_text().split()
            where = str(group / "cpu.max")
        else:
            quota = (group / "cpu.cfs_quota_us").read_text().strip()
            period = (group / "cpu.cfs_period_us").read_text().strip()
            where = str(group / "cpu.cfs_quota_us")
        if quota in ("max", "-1") or int(period) <= 0 or int(quota) <= 0:
            return None
        return int(quota) / int(period), where
    except (OSError, ValueError):
        return None
