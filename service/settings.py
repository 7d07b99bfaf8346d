"""The service's configuration: every ``ATELIER_*`` variable, parsed once into one frozen object.

A bad value refuses to start, naming the variable and what it accepts; an ``ATELIER_*`` name the
service does not read (a typo) is kept in ``ignored`` and logged at start-up. ``SETTINGS`` is the
table the README's configuration section is checked against (``tests/test_settings.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_EXPORTS = Path(__file__).resolve().parent.parent / "exports"
PROVIDER_WORDS = ("cuda", "cpu")  # ATELIER_PROVIDERS' words (service/runtime.py maps them to ONNX Runtime's names)
T = TypeVar("T")


class SettingsError(ValueError):
    """An ``ATELIER_*`` variable with a value the service cannot use."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as the README states it
    meaning: str


SETTINGS = (
    Setting("ATELIER_EXPORTS", "exports/ beside service/", "folder with manifest.json and the ONNX files"),
    Setting("ATELIER_PROVIDERS", "cuda,cpu", "ONNX Runtime providers in order: cuda,cpu, cuda (or refuse) or cpu"),
    Setting("ATELIER_CUDA_OPTIONS", "cudnn_conv_algo_search=DEFAULT", "CUDA provider options, key=value,..."),
    Setting("ATELIER_PRECISION", "auto", "auto (fp16 on CUDA where its parity holds), fp32 or fp16"),
    Setting("ATELIER_CPUS", "affinity, lowered to the CPU quota", "cores every thread pool is sized to"),
    Setting("ATELIER_STYLIZE_SLOTS", "1 per 4 cores, at least 1", "stylisations run at once"),
    Setting("ATELIER_MEMORY_BUDGET_GB", "60% of available memory", "memory for stylisations in flight"),
    Setting("ATELIER_UPLOAD_BUDGET_MB", "512", "request bodies held at once; more waits outside (429)"),
    Setting("ATELIER_SHAPE_BUCKET", "64 on CUDA, minimal on CPU", "stylisation inputs padded to multiples of it"),
    Setting("ATELIER_SAMPLE_BATCHING", "0", "1: generator calls that arrive together run as one batch"),
    Setting("ATELIER_QUEUE_SECONDS", "20", "longest a stylisation may wait for a slot (then 429/503)"),
    Setting("ATELIER_DRAIN_SECONDS", "2", "on SIGTERM, seconds of readyz 503 before the listener closes"),
    Setting("ATELIER_SHUTDOWN_TIMEOUT", "25", "on SIGTERM, seconds until unfinished work is abandoned"),
    Setting("ATELIER_API_KEYS", "none (no key needed)", "comma-separated keys: API routes need Bearer one"),
    Setting("ATELIER_API_KEYS_FILE", "none", "a file of keys, one per line (# comments), added to the above"),
    Setting("ATELIER_METRICS_AUTH", "open", "key: /metrics needs a key too; open: it does not"),
    Setting("ATELIER_RATE_LIMIT", "0 (off)", "requests a minute per key (token bucket; 429 + Retry-After)"),
)
NAMES = frozenset(s.name for s in SETTINGS)


@dataclass(frozen=True)
class Settings:
    exports: Path = DEFAULT_EXPORTS
    providers: str = "cuda,cpu"
    cuda_options: str = ""
    precision: str = "auto"
    cpus: int | None = None  # None: from the affinity mask and the CPU quota
    stylize_slots: int | None = None  # None: 1 per 4 cores
    memory_budget_bytes: int | None = None  # None: 60% of what is available at start
    upload_budget_bytes: int = 512 * 2**20
    shape_bucket: int | None = None  # None: 64 on CUDA, minimal on CPU
    sample_batching: bool = False
    queue_seconds: float = 20.0
    drain_seconds: float = 2.0
    shutdown_timeout: float = 25.0
    api_keys: tuple[str, ...] = ()
    metrics_need_key: bool = False
    rate_limit_per_minute: float = 0.0
    ignored: tuple[str, ...] = ()  # ATELIER_* names set but not read here

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Every variable read and checked; raises ``SettingsError`` naming the first bad one."""
        get = _Reader(env)
        keys = [k.strip() for k in get.text("ATELIER_API_KEYS", "").split(",") if k.strip()]
        keys += get.parsed("ATELIER_API_KEYS_FILE", None, _read_keys_file) or []
        for key in keys:
            if not key.isascii() or any(c.isspace() for c in key) or len(key) < 16:
                raise SettingsError(
                    "ATELIER_API_KEYS / ATELIER_API_KEYS_FILE: each key must be at least 16 printable ASCII "
                    "characters without spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        memory = get.number("ATELIER_MEMORY_BUDGET_GB", None, float, above=0)
        return cls(
            exports=Path(get.text("ATELIER_EXPORTS", str(DEFAULT_EXPORTS))).resolve(),
            providers=get.parsed("ATELIER_PROVIDERS", "cuda,cpu", _providers),
            cuda_options=get.parsed("ATELIER_CUDA_OPTIONS", "", _cuda_options),
            precision=get.choice("ATELIER_PRECISION", "auto", ("auto", "fp32", "fp16")),
            cpus=get.number("ATELIER_CPUS", None, int, at_least=1, what="a whole number of cores, 1 or more"),
            stylize_slots=get.number("ATELIER_STYLIZE_SLOTS", None, int, at_least=1),
            memory_budget_bytes=int(memory * 1e9) if memory is not None else None,
            upload_budget_bytes=int(get.number("ATELIER_UPLOAD_BUDGET_MB", 512, float, above=0) * 2**20),
            shape_bucket=get.number("ATELIER_SHAPE_BUCKET", None, int, at_least=1),
            sample_batching=get.choice("ATELIER_SAMPLE_BATCHING", "0", ("0", "1")) == "1",
            queue_seconds=get.number("ATELIER_QUEUE_SECONDS", 20.0, float, at_least=0),
            drain_seconds=get.number("ATELIER_DRAIN_SECONDS", 2.0, float, at_least=0),
            shutdown_timeout=get.number("ATELIER_SHUTDOWN_TIMEOUT", 25.0, float, at_least=0),
            api_keys=tuple(dict.fromkeys(keys)),
            metrics_need_key=get.choice("ATELIER_METRICS_AUTH", "open", ("open", "key")) == "key",
            rate_limit_per_minute=get.number("ATELIER_RATE_LIMIT", 0.0, float, at_least=0),
            ignored=tuple(sorted(k for k in env if k.startswith("ATELIER_") and k not in NAMES | ELSEWHERE)),
        )

    def describe_ignored(self) -> str | None:
        """A warning for ``ignored`` names, or None."""
        if not self.ignored:
            return None
        hint = " (the client's key is ATELIER_API_KEY; the service's are ATELIER_API_KEYS)"
        return f"ignoring {', '.join(self.ignored)}: not a setting of the service" + (
            hint if "ATELIER_API_KEY" in self.ignored else ""
        )


# Read by the client and the trainers, not by the service (ATELIER_API_KEY is warned about: it
# looks like the service's ATELIER_API_KEYS and would leave the service open).
ELSEWHERE = frozenset({"ATELIER_URL", "ATELIER_CACHE", "ATELIER_VGG19_URL"})


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None or not value.strip() else value.strip()

    def parsed(self, name: str, default: T, parse: Callable[[str, str], T]) -> T:
        value = self.env.get(name)
        return default if value is None or not value.strip() else parse(name, value.strip())

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name}={self.env[name]!r}: use one of {', '.join(choices)}")
        return value

    def number(
        self,
        name: str,
        default: Any,
        kind: type,
        at_least: float | None = None,
        above: float | None = None,
        what: str | None = None,
    ) -> Any:
        raw = self.env.get(name)
        if raw is None or not raw.strip():
            return default
        wanted = what or ("a whole number" if kind is int else "a number") + (
            f" >= {at_least:g}" if at_least is not None else f" > {above:g}" if above is not None else ""
        )
        try:
            value = kind(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: use {wanted}") from None
        if (at_least is not None and not value >= at_least) or (above is not None and not value > above):
            raise SettingsError(f"{name}={raw!r}: use {wanted}")
        return value


def _providers(name: str, value: str) -> str:
    words = [w.strip().lower() for w in value.split(",") if w.strip()]
    if not words or any(w not in PROVIDER_WORDS for w in words):
        raise SettingsError(f"{name}={value!r}: use a comma-separated list of {', '.join(PROVIDER_WORDS)}")
    return ",".join(words)


def _cuda_options(name: str, value: str) -> str:
    parse_cuda_options(value)
    return value


# The ONNX Runtime CUDA provider options an operator may set (ATELIER_CUDA_OPTIONS, key=value,...):
# the value each takes. CUDA_DEFAULTS apply unless set; every other option is ONNX Runtime's default
# (no device memory limit, an arena that grows by powers of two).
CUDA_OPTIONS = {
    "device_id": (r"\d+", "a GPU index"),
    "gpu_mem_limit": (r"\d+", "bytes"),
    "arena_extend_strategy": ("kNextPowerOfTwo|kSameAsRequested", "kNextPowerOfTwo or kSameAsRequested"),
    "cudnn_conv_algo_search": ("EXHAUSTIVE|HEURISTIC|DEFAULT", "EXHAUSTIVE, HEURISTIC or DEFAULT"),
    "cudnn_conv_use_max_workspace": ("[01]", "0 or 1"),
    "prefer_nhwc": ("[01]", "0 or 1"),
    "use_tf32": ("[01]", "0 or 1"),
}


def parse_cuda_options(spec: str) -> dict[str, str]:
    """``ATELIER_CUDA_OPTIONS`` (``key=value,...``; empty for none) -> CUDA provider options;
    ``ValueError`` naming the item that is wrong and what it may be."""
    options: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in CUDA_OPTIONS:
            raise SettingsError(
                f"ATELIER_CUDA_OPTIONS: {item!r} is not key=value with one of {', '.join(CUDA_OPTIONS)}"
            )
        pattern, what = CUDA_OPTIONS[key]
        if not re.fullmatch(pattern, value):
            raise SettingsError(f"ATELIER_CUDA_OPTIONS: {key}={value!r}: {key} takes {what}")
        options[key] = value
    return options


def _read_keys_file(name: str, value: str) -> list[str]:
    try:
        lines = Path(value).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{name}={value!r}: cannot read it ({e})") from None
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise SettingsError(f"{name}={value!r}: the file holds no key (one per line)")
    return keys
