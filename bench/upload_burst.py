"""A burst of large stylize uploads at once, judged by the worker's memory and its answers.

    python -m bench.upload_burst --exports exports --clients 64 --megabytes 18   # part of `make soak`

Each of ``--clients`` threads sends one ``stylize`` with two incompressible PNGs of about
``--megabytes`` each (content and style), all released together. The worker's RSS is sampled every
20 ms from before the burst until every answer is in. Acceptance (the exit status): no 5xx and no
connection error, every 429/503 with ``Retry-After``, and the peak RSS at most ``--max-growth-gb``
above the RSS before the burst. ``tests/test_upload_burst.py`` runs a small one in ``make test``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from bench.pipeline import Server
from bench.soak import worker_rss


def noise_png(megabytes: float, seed: int) -> bytes:
    """An RGB PNG of random pixels (PNG cannot compress them): about ``megabytes`` MB."""
    side = int((megabytes * 1e6 / 3) ** 0.5)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def burst(url: str, clients: int, content: bytes, style: bytes, timeout: float = 300) -> list[tuple[object, str]]:
    """(status or the exception's name, Retry-After) of each client's one upload, sent together."""
    gate, results = threading.Barrier(clients), [None] * clients

    def one(i: int) -> None:
        gate.wait()
        try:
            r = requests.post(
                f"{url}/stylize",
                files={"content": ("c.png", content), "style": ("s.png", style)},
                data={"max_side": "256"},
                timeout=timeout,
            )
            results[i] = (r.status_code, r.headers.get("Retry-After", ""))
        except requests.RequestException as e:
            results[i] = (type(e).__name__, "")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def measured_burst(server: Server, clients: int, megabytes: float) -> dict:
    """The burst against ``server``, with the worker's RSS before it and its peak while it ran."""
    content, style = noise_png(megabytes, 1), noise_png(megabytes, 2)
    before, peak, done = worker_rss(server), 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, worker_rss(server))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        results = burst(server.url, clients, content, style)
    finally:
        done.set()
        sampler.join()
    statuses = Counter(str(status) for status, _ in results)
    unexpected = [
        (status, retry)
        for status, retry in results
        if not isinstance(status, int) or status >= 500 and status != 503 or status in (429, 503) and not retry
    ]
    return {
        "clients": clients,
        "body_mb": round((len(content) + len(style)) / 1e6, 1),
        "statuses": dict(statuses),
        "unexpected": [list(u) for u in unexpected],
        "rss_before_mb": round(before / 2**20),
        "rss_peak_mb": round(peak / 2**20),
        "rss_growth_mb": round((peak - before) / 2**20),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--megabytes", type=float, default=18.0, help="size of each of the two PNGs (default 18)")
    p.add_argument("--max-growth-gb", type=float, default=1.5, help="the RSS bound (default 1.5)")
    p.add_argument("--out", type=Path, default=Path("reports/upload-burst.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Server(args.exports.resolve(), Path(tmp) / "serve.log") as server:
        result = measured_burst(server, args.clients, args.megabytes)
    result["max_growth_mb"] = round(args.max_growth_gb * 1024)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    ok = not result["unexpected"] and result["rss_growth_mb"] <= result["max_growth_mb"]
    print("PASS" if ok else "FAIL", f"(written to {args.out})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
