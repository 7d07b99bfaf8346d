"""`make smoke`: the whole path in miniature, in a few minutes on 2 CPU cores.

Tiny GAN training on the MNIST digits, a few style-decoder steps on RANDOM VGG weights (path
only), export, `bentoml serve` on a free loopback port, and one request to each endpoint.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

from bench import hostile_images
from bench.pipeline import Server, export, train_tiny_gan, train_tiny_style

SMOKE_GAN_ARGS = ["--dataset", "mnist", "--epochs", "1", "--classifier-epochs", "1"]


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="atelier-smoke-") as tmp:
        root = Path(tmp)
        print("smoke: training a tiny GAN on mnist (1 epoch) and a tiny style decoder (random VGG)...", flush=True)
        gan = train_tiny_gan(root / "runs", extra=SMOKE_GAN_ARGS)
        style = train_tiny_style(root / "runs")
        exports = export(root / "exports", gan, style)
        print(f"smoke: exported to {exports}; starting bentoml serve...", flush=True)
        with Server(exports, root / "serve.log") as server:
            png = hostile_images.png(96, 64)
            checks = [
                ("sample", lambda: requests.post(f"{server.url}/sample", json={"n": 4, "seed": 1}, timeout=60)),
                (
                    "sample_grid",
                    lambda: requests.post(f"{server.url}/sample_grid", json={"n": 16, "seed": 1}, timeout=60),
                ),
                (
                    "interpolate",
                    lambda: requests.post(
                        f"{server.url}/interpolate", json={"seed_a": 1, "seed_b": 2, "steps": 4}, timeout=60
                    ),
                ),
                (
                    "stylize (preset)",
                    lambda: requests.post(
                        f"{server.url}/stylize", files={"content": png}, data={"style_name": "wheat_field"}, timeout=60
                    ),
                ),
                (
                    "stylize (upload)",
                    lambda: requests.post(f"{server.url}/stylize", files={"content": png, "style": png}, timeout=60),
                ),
                ("styles", lambda: requests.post(f"{server.url}/styles", timeout=60)),
                ("info", lambda: requests.post(f"{server.url}/info", timeout=60)),
                ("metrics", lambda: requests.get(f"{server.url}/metrics", timeout=60)),
                ("playground", lambda: requests.get(f"{server.url}/playground/", timeout=60)),
            ]
            failed = 0
            for name, call in checks:
                t = time.perf_counter()
                r = call()
                ms = (time.perf_counter() - t) * 1000
                ok = r.status_code == 200
                failed += not ok
                print(f"  {'ok  ' if ok else 'FAIL'} {name:18s} {r.status_code} {ms:7.1f} ms  {len(r.content)} bytes")
                if not ok:
                    print(f"       {r.text[:300]}")
    print(f"smoke: {'passed' if not failed else f'{failed} failed'} in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
