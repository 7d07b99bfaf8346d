"""`make bench`: latency of the served endpoints beside the raw ONNX Runtime call they wrap.

Starts `bentoml serve` on the exported models (``--exports``), times each endpoint over HTTP on
loopback, and times the same model calls made directly on ONNX Runtime sessions in this process
(the baseline, measured in the same run). Reports medians and the ratio HTTP / raw; writes
``reports/bench.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import requests
from PIL import Image

from service.manifest import load_manifest
from service.runtime import open_session, parse_providers
from service.sampling import latents_for_seeds, seed_range
from tests.hostile_images import gradient
from tests.pipeline import REPO, Server


def timed(fn, repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "repeats": repeats}


def bench_gan(server: Server, exports: Path, manifest: dict, providers: list[str], repeats: int) -> list[dict]:
    entry = manifest["models"]["generator"]
    session = open_session(exports / entry["path"], providers)
    rows = []
    for n in (1, 64):
        feed = {"z": latents_for_seeds(seed_range(0, n), entry["latent_dim"])}
        if entry["class_labels"]:
            feed["label"] = np.arange(n, dtype=np.int64) % len(entry["class_labels"])
        raw = timed(lambda: session.run(["image"], feed), repeats)

        def call():
            r = requests.post(f"{server.url}/sample", json={"n": n, "seed": 0}, timeout=120)
            r.raise_for_status()

        http = timed(call, repeats)
        rows.append({"endpoint": "sample", "case": f"n={n}", "http": http, "raw_onnxruntime": raw,
                     "provider": session.get_providers()[0]})
    return rows


def bench_style(server: Server, exports: Path, manifest: dict, providers: list[str], repeats: int) -> list[dict]:
    """``stylize`` with a preset over HTTP, beside the stylizer graph alone (the whole cascade)."""
    stylizer = open_session(exports / manifest["models"]["stylizer"]["path"], providers)
    levels = manifest["style"]["levels"]
    name = manifest["style"]["presets"][0]["name"]
    with np.load(exports / manifest["style"]["presets_file"]) as presets:
        stats = {f"{kind}_{lv}": presets[f"{name}__{lv}__{kind}"][None] for lv in levels for kind in ("mean", "cov")}
    rows = []
    for side in (256, 512):
        pixels = gradient(side, side)
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0

        def raw_call():
            stylizer.run(["image"], {"content": x, "strength": np.ones(1, np.float32), **stats})

        raw = timed(raw_call, repeats, warmup=1)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        content = buf.getvalue()

        def call():
            r = requests.post(f"{server.url}/stylize", files={"content": content},
                              data={"style_name": name, "max_side": str(side)}, timeout=300)
            r.raise_for_status()

        http = timed(call, repeats, warmup=1)
        rows.append({"endpoint": "stylize", "case": f"{side}x{side} preset {name}", "http": http,
                     "raw_onnxruntime": raw, "provider": stylizer.get_providers()[0]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--exports", type=Path, default=REPO / "exports", help="export folder to serve and measure")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per GAN case (style: a quarter, at least 3)")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "bench.json")
    args = p.parse_args(argv)
    manifest = load_manifest(args.exports.resolve())
    providers = parse_providers(os.environ.get("ATELIER_PROVIDERS", "cuda,cpu"))
    with tempfile.TemporaryDirectory() as tmp, Server(args.exports.resolve(), Path(tmp) / "serve.log") as server:
        rows = []
        if "generator" in manifest["models"]:
            rows += bench_gan(server, args.exports, manifest, providers, args.repeats)
        if "stylizer" in manifest["models"]:
            rows += bench_style(server, args.exports, manifest, providers, max(3, args.repeats // 4))
    for row in rows:
        row["ratio_http_over_raw"] = row["http"]["median_ms"] / row["raw_onnxruntime"]["median_ms"]
    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "onnxruntime": ort.__version__}, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| endpoint | case | HTTP median (p90) ms | raw ONNX Runtime median ms | ratio | provider |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['endpoint']} | {r['case']} | {r['http']['median_ms']:.1f} ({r['http']['p90_ms']:.1f}) | "
              f"{r['raw_onnxruntime']['median_ms']:.1f} | {r['ratio_http_over_raw']:.2f} | {r['provider']} |")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
