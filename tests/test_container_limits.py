"""What a container allows, read as the kernel shows it (/proc/self/cgroup, /proc/self/mountinfo;
cgroup v1 and v2, the process's own group and those above it): thread pools sized to the cores the
process may use (service.runtime.cpu_budget: ATELIER_CPUS, else the affinity mask lowered to the CPU
quota), every ONNX Runtime session opened with that many threads, and the stylisation memory budget
taken from what the memory limit leaves (service.runtime.available_memory)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from bench.pipeline import Server, run_fresh
from service.runtime import CPUS_ENV, Cpus, available_memory, cgroup_cpu_quota, cpu_budget
from service.settings import Settings, SettingsError

V1_CPU = Path("/sys/fs/cgroup/cpu")
V1_MEMORY = Path("/sys/fs/cgroup/memory")


@pytest.mark.parametrize("setting", ["0", "-2", "two", "1.5", " "])
def test_a_wrong_cpu_count_is_named(setting):
    if not setting.strip():  # blank: as if unset
        assert Settings.from_environment({CPUS_ENV: setting}).cpus is None
        return
    with pytest.raises(SettingsError, match=f"{CPUS_ENV}={setting!r}: use a whole number of cores"):
        Settings.from_environment({CPUS_ENV: setting})


def test_the_setting_wins_over_what_the_machine_says():
    assert cpu_budget(Settings.from_environment({CPUS_ENV: "3"}).cpus) == Cpus(3, CPUS_ENV)


def fake_proc(tmp_path: Path, cgroup: str, mounts: list[str]) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text("".join(line + "\n" for line in mounts))
    return proc


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_a_cgroup_v2_quota_of_an_ancestor_group_counts(tmp_path):
    """A pod's limit sits on the pod's group; the container's own group says max."""
    root = tmp_path / "cg"
    write(root / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000")
    write(root / "kubepods" / "pod1" / "cpu.max", "250000 100000")
    write(root / "kubepods" / "cpu.max", "max 100000")
    proc = fake_proc(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        [
            "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw",
            f"30 22 0:26 / {root} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate",
        ],
    )
    assert cgroup_cpu_quota(proc) == (2.5, str(root / "kubepods" / "pod1" / "cpu.max"))
    assert cpu_budget(proc=proc).count == min(3, len(os.sched_getaffinity(0)))


def test_a_container_that_sees_its_own_group_at_the_mount_point(tmp_path):
    """Without a cgroup namespace, /proc/self/cgroup names the host's path and the mount's root is
    that same group: its files are at the mount point itself."""
    root = tmp_path / "cg"
    write(root / "cpu.max", "50000 100000")
    proc = fake_proc(
        tmp_path,
        "0::/docker/abc123\n",
        [f"30 22 0:26 /docker/abc123 {root} ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw"],
    )
    assert cgroup_cpu_quota(proc) == (0.5, str(root / "cpu.max"))
    assert cpu_budget(proc=proc).count == 1
    assert cpu_budget(proc=proc).source.startswith("cgroup CPU quota 0.5")


def test_a_cgroup_v1_cfs_quota_and_no_quota_at_all(tmp_path):
    root = tmp_path / "cpu,cpuacct"
    write(root / "a" / "b" / "cpu.cfs_quota_us", "-1")
    write(root / "a" / "b" / "cpu.cfs_period_us", "100000")
    write(root / "a" / "cpu.cfs_quota_us", "150000")
    write(root / "a" / "cpu.cfs_period_us", "100000")
    mounts = [
        f"31 22 0:27 / {tmp_path / 'memory'} rw,relatime - cgroup cgroup rw,memory",
        f"32 22 0:28 / {root} rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    ]
    proc = fake_proc(tmp_path, "5:memory:/a/b\n4:cpu,cpuacct:/a/b\n0::/\n", mounts)
    assert cgroup_cpu_quota(proc) == (1.5, str(root / "a" / "cpu.cfs_quota_us"))
    write(root / "a" / "cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_quota(proc) is None
    assert cpu_budget(proc=proc) == Cpus(len(os.sched_getaffinity(0)), "affinity")


def test_a_memory_limit_above_the_process_leaves_less_than_the_machine(tmp_path):
    """cgroup v1: the pod's group limits 3 GiB and uses 1 GiB; the container's own sets no limit
    (v1 writes "none" as a number near 2**63)."""
    root = tmp_path / "memory"
    write(root / "pod" / "ctr" / "memory.limit_in_bytes", "9223372036854771712")
    write(root / "pod" / "ctr" / "memory.usage_in_bytes", str(2**29))
    write(root / "pod" / "memory.limit_in_bytes", str(3 * 2**30))
    write(root / "pod" / "memory.usage_in_bytes", str(2**30))
    proc = fake_proc(
        tmp_path, "4:memory:/pod/ctr\n0::/\n", [f"31 22 0:27 / {root} rw,relatime - cgroup cgroup rw,memory"]
    )
    assert available_memory(proc) == 2 * 2**30
    write(root / "pod" / "memory.limit_in_bytes", "9223372036854771712")
    assert available_memory(proc) > 2 * 2**30  # the machine's MemAvailable (this one has more)


def test_a_cgroup_v2_memory_limit(tmp_path):
    root = tmp_path / "cg"
    write(root / "memory.max", str(2**30))
    write(root / "memory.current", str(2**28))
    proc = fake_proc(tmp_path, "0::/\n", [f"30 22 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw"])
    assert available_memory(proc) == 3 * 2**28


def python(code: str, cgroup: Path | None = None) -> str:
    """The standard output of ``code`` run by ``run_fresh`` (nothing else has started threads
    there), inside ``cgroup`` when given."""
    done = run_fresh(code, timeout=120, cgroup=cgroup)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def in_cgroup(hierarchy: Path, files: dict[str, str], code: str) -> str:
    """Run ``code`` in a fresh Python inside a new cgroup v1 group of ``hierarchy`` with these settings."""
    group = hierarchy / f"atelier-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        for name, value in files.items():
            (group / name).write_text(value)
        return python(code, group)
    finally:
        group.rmdir()


def threads_started(session_code: str) -> str:
    """Code that prints how many threads opening a session (``session_code``) started."""
    return (
        "import os, time\n"
        "from service.runtime import cpu_budget, open_session\n"
        "def threads():\n"
        "    time.sleep(0.2)\n"
        "    return len(os.listdir('/proc/self/task'))\n"
        "before = threads()\n"
        f"{session_code}\n"
        "print(threads() - before, end=' ')\n"
    )


@pytest.mark.skipif(
    not os.access(V1_CPU, os.W_OK), reason="no writable cgroup v1 CPU hierarchy here to make a real quota in"
)
def test_a_real_cgroup_quota_sizes_the_sessions_thread_pool(exports_dir):
    """In a real CPU group limited to half a core, the budget is 1, and a session opened with it
    starts no pool threads."""
    model = exports_dir / "generator.onnx"
    code = threads_started(f"s = open_session('{model}', ['CPUExecutionProvider'], threads=cpu_budget().count)")
    code += "cpus = cpu_budget(); print(cpus.count, cpus.source)"
    quota = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"}
    started, count, source = in_cgroup(V1_CPU, quota, code).split(" ", 2)
    assert (int(count), int(started)) == (1, 0)
    assert source.startswith("cgroup CPU quota 0.5 (") and source.endswith("cpu.cfs_quota_us)")


@pytest.mark.skipif(
    not os.access(V1_MEMORY, os.W_OK), reason="no writable cgroup v1 memory hierarchy here to make a real limit in"
)
def test_a_real_memory_limit_bounds_what_the_service_budgets():
    """In a real memory group limited to 1 GiB, available_memory() is what the limit leaves, and
    the stylisation budget (60 % of it) fits inside, on a machine with more memory than that."""
    code = "from service.runtime import available_memory; print(available_memory())"
    left = int(in_cgroup(V1_MEMORY, {"memory.limit_in_bytes": str(2**30)}, code))
    assert 2**29 < left <= 2**30


def test_a_session_starts_the_pool_it_is_given(exports_dir):
    """threads=N: N - 1 pool threads beside the caller's."""
    model = exports_dir / "generator.onnx"
    assert python(threads_started(f"s = open_session('{model}', ['CPUExecutionProvider'], threads=4)")) == "3"


def test_a_wrong_cpu_count_is_refused_at_start(exports_dir, tmp_path):
    env = {CPUS_ENV: "all", "BENTOML_CONTAINERIZED": "true"}  # as in the container: no respawn
    with pytest.raises(RuntimeError, match="bentoml serve exited with [1-9]"):
        Server(exports_dir, tmp_path / "serve.log", startup_timeout=60, env=env).__enter__()
    assert f"{CPUS_ENV}='all': use a whole number of cores, 1 or more" in (tmp_path / "serve.log").read_text()
