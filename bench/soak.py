"""`make soak`: a real `bentoml serve` under mixed valid and hostile load, judged by its answers.

N clients (asyncio tasks, one keep-alive connection each) join over a ramp-up (as a load tool's
spawn rate does; 16 clients a second by default) and then send, for a given duration, a mix of
``sample``, ``sample_grid``, ``interpolate``, ``styles``, ``info`` and ``stylize`` calls, a quarter
of them hostile (broken, oversized, animated images from ``bench/hostile_images.py``; bad JSON
fields). A client that gets 429 or 503 waits as ``Retry-After`` says, plus a random part (polite
back-off with jitter).

Every answer is classified: 200 for valid input, 4xx for hostile input, and 429/503 *with*
``Retry-After`` under overload are expected; anything else (a 5xx, a 200 for hostile input, a
429 without ``Retry-After``, a connection error) is unexpected. Printed: per request kind the
counts by status, p50/p99 of successful calls, goodput; the worker's RSS after warm-up and at
the end. Acceptance (the exit status): no unexpected answer (ramp-up included), RSS growth
<= 10 %, and p99 <= 5 x p50 for each kind with enough samples, judged on the requests sent after
the ramp-up (the steady state a soak is about). The ramp-up's own latencies are printed beside:
clients that all start in the same millisecond are a burst, whose queueing no 2-core server
answers within 5 x its steady median. ``tests/test_resilience.py`` runs a short version in
``make test``, judged on its answers and memory only: latency is the benchmark's to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import requests
from PIL import Image

from bench import hostile_images as hi
from bench.pipeline import Server

RSS_GROWTH_LIMIT = 0.10
TAIL_RATIO_LIMIT = 5.0
MIN_SAMPLES_FOR_TAIL = 100  # below that, a p99 is just the slowest call
CLIENTS_PER_SECOND = 16  # default ramp-up: clients joining per second
CLIENT_NICE = 5


def _lower_this_thread(nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        pass


def worker_rss(server: Server) -> int:
    """Resident memory (bytes) of the service worker process(es) under the `bentoml serve` arbiter."""
    total = 0
    for pid in worker_pids(server):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def worker_pids(server: Server) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"_bentoml_impl.worker.service" in cmdline:
            pids.append(int(proc.name))
    return pids


def photo(w: int, h: int, seed: int = 0) -> bytes:
    """A photo-like JPEG: a gradient with noise."""
    rng = np.random.default_rng(seed)
    base = hi.gradient(w, h).astype(np.int16) + rng.integers(-20, 20, (h, w, 3))
    buffer = io.BytesIO()
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class Call:
    kind: str  # what is reported: endpoint, "+hostile" for invalid input
    path: str
    hostile: bool
    json: dict | None = None
    files: list | None = None
    data: dict | None = None
    method: str = "POST"


def hostile_stylize_payloads() -> list[tuple[list, dict]]:
    bad = [
        hi.empty(),
        hi.non_image_bytes(),
        hi.unsupported_format(),
        hi.one_by_one_png(),
        hi.truncated_png(),
        hi.huge_header_png(),
        hi.animated_png(),
        hi.multipage_tiff(),
    ]
    payloads = [([("content", ("c.bin", data))], {"style_name": "wheat_field"}) for data in bad]
    payloads += [
        ([("content", ("c.png", hi.png()))], {"style_name": "no-such-style"}),
        ([("content", ("c.png", hi.png()))], {"style_name": "wheat_field", "stregnth": "0.5"}),
        ([("content", ("c.png", hi.png()))], {"style_name": "wheat_field", "max_side": "5"}),
    ]
    return payloads


class Mix:
    """The request mix: weights per kind; valid stylisations at a few sizes up to ``max_side``."""

    def __init__(self, presets: list[str], max_side: int, has_gan: bool):
        self.presets = presets
        self.max_side = max_side
        self.has_gan = has_gan
        # Same pixel count at every orientation: one kind, one amount of work (a tail is a tail, not a size mix).
        self.photos = [
            photo(round(w * max_side / 512), round(h * max_side / 512), i)
            for i, (w, h) in enumerate([(512, 384), (384, 512), (1024, 768), (768, 1024)])
        ]
        self.hostile_stylize = hostile_stylize_payloads()
        self.hostile_json = [
            ("/sample", {"n": 1, "sed": 5}),
            ("/sample", {"n": 0}),
            ("/sample", {"n": 10**6}),
            ("/interpolate", {"seed_a": -1, "seed_b": 2}),
            ("/sample_grid", {"truncation": 0}),
            ("/sample", {"label": 10**9, "seed": 1}),
        ]

    def next(self, rng: random.Random) -> Call:
        r = rng.random()
        if self.has_gan and r < 0.30:
            return Call("sample", "/sample", False, json={"n": 1, "seed": rng.randrange(2**32)})
        if self.has_gan and r < 0.35:
            return Call("sample_grid", "/sample_grid", False, json={"n": 16, "seed": rng.randrange(2**32)})
        if self.has_gan and r < 0.40:
            return Call(
                "interpolate", "/interpolate", False, json={"seed_a": rng.randrange(99), "seed_b": 7, "steps": 8}
            )
        if r < 0.45:
            return Call("styles", "/styles", False, json={})
        if r < 0.50:
            return Call("info", "/info", False, json={})
        if r < 0.75:
            fields = {
                "style_name": rng.choice(self.presets),
                "max_side": str(self.max_side),
                "strength": f"{rng.random():.2f}",
            }
            return Call(
                "stylize", "/stylize", False, files=[("content", ("c.jpg", rng.choice(self.photos)))], data=fields
            )
        if self.has_gan and r < 0.85:
            path, body = rng.choice(self.hostile_json)
            return Call(path.strip("/") + "+hostile", path, True, json=body)
        files, data = rng.choice(self.hostile_stylize)
        return Call("stylize+hostile", "/stylize", True, files=files, data=data)


@dataclass
class Results:
    steady_from: float = 0.0  # monotonic time the ramp-up ends: latencies of calls sent before it are kept apart
    statuses: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    latencies: dict = field(default_factory=lambda: defaultdict(list))
    # successful valid calls other than stylize, sent during the ramp
    ramp_latencies: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, call: Call, status: int | str, sent: float, seconds: float, retry_after: str | None, body: str
    ) -> None:
        with self.lock:
            self.statuses[call.kind][status] += 1
            if status == 200 and not call.hostile:
                if sent >= self.steady_from:
                    self.latencies[call.kind].append(seconds)
                elif call.kind != "stylize":
                    self.ramp_latencies.append(seconds)
            if not expected(call, status, retry_after):
                self.unexpected.append(f"{call.kind} {call.path}: {status} {body[:200]}")


def expected(call: Call, status: int | str, retry_after: str | None) -> bool:
    if status in (429, 503):
        return retry_after is not None and retry_after.isdigit()
    if not isinstance(status, int):
        return False
    return 400 <= status < 500 if call.hostile else status == 200


async def client(http: httpx.AsyncClient, mix: Mix, start: float, stop: float, results: Results, seed: int) -> None:
    rng = random.Random(seed)
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    while time.monotonic() < stop:
        call = mix.next(rng)
        started = time.monotonic()
        try:
            r = await http.post(call.path, json=call.json, files=call.files, data=call.data)
            # only the start of the body, kept for the report of unexpected answers: decoding a whole
            # image as text (~10 ms for 600 kB) would stall this event loop, and with it the clocks
            # of every other client waiting on it
            status, retry_after, body = (
                r.status_code,
                r.headers.get("Retry-After"),
                r.content[:300].decode(errors="replace"),
            )
        except httpx.HTTPError as e:
            status, retry_after, body = type(e).__name__, None, str(e)
        results.record(call, status, started, time.monotonic() - started, retry_after, body)
        if status in (429, 503) and retry_after and retry_after.isdigit():
            # Polite back-off: at least Retry-After, plus up to half as much again at random, so that
            # the clients turned away together do not all come back in the same millisecond.
            wait = float(retry_after) * (1 + 0.5 * rng.random())
            await asyncio.sleep(min(wait, max(0.0, stop - time.monotonic())))


async def load(
    url: str, mix: Mix, clients: int, duration: float, results: Results, timeout: float, ramp: float = 0.0
) -> float:
    """``clients`` concurrent clients (one connection each), joining evenly over ``ramp`` seconds,
    then all of them for ``duration`` seconds; the time taken."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        started = time.monotonic()
        results.steady_from = started + ramp
        stop = started + ramp + duration
        await asyncio.gather(
            *(client(http, mix, started + ramp * i / clients, stop, results, i) for i in range(clients))
        )
        return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    url: str,
    server: Server,
    clients: int,
    duration: float,
    max_side: int,
    timeout: float,
    out=print,
    ramp: float | None = None,
) -> dict:
    """The soak; ``ramp`` (default: 16 clients a second) seconds of clients joining, then ``duration``."""
    ramp = clients / CLIENTS_PER_SECOND if ramp is None else ramp
    info = requests.post(f"{url}/info", json={}, timeout=30).json()
    presets = info["models"].get("stylizer", {}).get("presets") or ["wheat_field"]
    mix = Mix(presets, max_side, "generator" in info["models"])
    asyncio.run(load(url, mix, 1, min(10.0, duration / 3), Results(), timeout))  # warm-up: one client, not judged
    rss_start = worker_rss(server)
    # The load runs on the same cores as the service: a notch below the service's request
    # threads (nice 5; the service's stylisations run at 10), so that the clients measure the
    # service rather than their own competition with it.
    _lower_this_thread(CLIENT_NICE)
    results = Results()
    elapsed = asyncio.run(load(url, mix, clients, duration, results, timeout, ramp))
    time.sleep(1.0)
    rss_end = worker_rss(server)
    return judge(results, clients, ramp, elapsed, max_side, rss_start, rss_end, out)


def ramp_summary(ramp_times: list[float]) -> dict:
    """The ramp-up's cheap calls: their count, and p50/p99 when there were any."""
    if not ramp_times:
        return {"count": 0}
    return {
        "count": len(ramp_times),
        "p50_ms": round(percentile(ramp_times, 0.5) * 1000, 1),
        "p99_ms": round(percentile(ramp_times, 0.99) * 1000, 1),
    }


def judge(
    results: Results, clients: int, ramp: float, elapsed: float, max_side: int, rss_start: int, rss_end: int, out
) -> dict:
    """The report of a finished load, printed with ``out`` as it is judged; "passed" is the verdict."""
    ramp_times = results.ramp_latencies
    report = {
        "clients": clients,
        "ramp_s": round(ramp, 1),
        "duration_s": round(elapsed - ramp, 1),
        "ramp_cheap_calls": ramp_summary(ramp_times),
        "rss_start_mb": round(rss_start / 2**20),
        "rss_end_mb": round(rss_end / 2**20),
        "rss_growth": round(rss_end / rss_start - 1, 3),
        "kinds": {},
        "unexpected": results.unexpected[:20],
        "unexpected_count": len(results.unexpected),
    }
    out(
        f"{clients} clients joining over {ramp:.1f} s, then {elapsed - ramp:.0f} s of load, max_side {max_side}; "
        f"latencies from after the ramp-up"
    )
    report["kinds"], tails_ok = kind_table(results, elapsed - ramp, out)
    if ramp_times:
        out(
            f"during the ramp-up: {len(ramp_times)} cheap calls answered, "
            f"p50 {percentile(ramp_times, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(ramp_times, 0.99) * 1000:.1f} ms (not judged)"
        )
    out(
        f"worker RSS: {report['rss_start_mb']} MB after warm-up, {report['rss_end_mb']} MB at the end "
        f"({report['rss_growth']:+.1%})"
    )
    for line in results.unexpected[:10]:
        out(f"UNEXPECTED {line}")
    report["passed"] = not results.unexpected and report["rss_growth"] <= RSS_GROWTH_LIMIT and tails_ok
    report["tails_ok"] = tails_ok
    out(
        "PASS"
        if report["passed"]
        else f"FAIL: {len(results.unexpected)} unexpected answer(s); RSS growth {report['rss_growth']:+.1%} "
        f"(limit {RSS_GROWTH_LIMIT:.0%}); p99/p50 within {TAIL_RATIO_LIMIT:g}x: {tails_ok}"
    )
    return report


def _column(v: float | None, scale: float = 1000) -> str:
    return f"{v * scale:9.1f}" if v is not None else f"{'-':>9}"


def kind_table(results: Results, steady_s: float, out) -> tuple[dict, bool]:
    """Per request kind, a row of the report and of the printed table (answers by status, p50,
    p99, goodput over the ``steady_s`` after the ramp-up); and whether every kind with enough
    samples kept its p99 within ``TAIL_RATIO_LIMIT`` times its p50."""
    out(f"{'kind':<22}{'answers by status':<34}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}{'good/s':>8}")
    kinds, tails_ok = {}, True
    for kind in sorted(results.statuses):
        codes = dict(sorted(results.statuses[kind].items(), key=lambda kv: str(kv[0])))
        times = results.latencies.get(kind, [])
        row = {
            "statuses": {str(k): v for k, v in codes.items()},
            "goodput_per_s": round(len(times) / steady_s, 2),
        }
        p50 = p99 = ratio = None
        if times:
            p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
            ratio = p99 / p50
            row.update(p50_ms=round(p50 * 1000, 1), p99_ms=round(p99 * 1000, 1), tail_ratio=round(ratio, 2))
            if len(times) >= MIN_SAMPLES_FOR_TAIL and ratio > TAIL_RATIO_LIMIT:
                tails_ok = False
        kinds[kind] = row
        out(
            f"{kind:<22}{', '.join(f'{k}: {v}' for k, v in codes.items()):<34}{_column(p50)}{_column(p99)}"
            f"{_column(ratio, 1)}{row['goodput_per_s']:8.2f}"
        )
    return kinds, tails_ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load after the ramp-up (default 180)")
    p.add_argument(
        "--ramp",
        type=float,
        default=None,
        help=f"seconds over which the clients join (default: {CLIENTS_PER_SECOND} a second)",
    )
    p.add_argument("--max-side", type=int, default=512, help="max_side of the valid stylisations")
    p.add_argument("--timeout", type=float, default=150.0, help="client timeout per request, seconds")
    p.add_argument("--out", type=Path, default=Path("reports/soak.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Server(args.exports.resolve(), Path(tmp) / "serve.log") as server:
        report = run(server.url, server, args.clients, args.duration, args.max_side, args.timeout, ramp=args.ramp)
        if not report["passed"]:
            print(server.log_tail(20))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
