"""CUDA provider options for the stylizer, measured: ``python -m bench.cuda_options --exports exports``.

For each precision the export has (fp32, and fp16 where it was exported) and each combination of
cuDNN's convolution algorithm search (``EXHAUSTIVE``, ONNX Runtime's default; ``HEURISTIC``;
``DEFAULT``, the service's), it opens the stylizer as the service does (``open_session`` with
those ``ATELIER_CUDA_OPTIONS``) and measures:

- the session's opening time;
- the **first** call in each of four shapes the session has not run (512², 1024×768, 768×1024,
  1024²: cuDNN chooses its algorithms per shape, so this is what a request in a cold shape bucket
  pays), then, in rounds over all the sessions (each round in a new random order, so that a GPU
  whose clock drifts slows them alike):
- the median of each shape's call with the four shapes **alternating**, as mixed uploads make
  them (on an H200 the exhaustive search cost 27× the repeated call's time this way);
- the median of a 512² call after a 512² call (**repeated**: one shape served over and over).

Prints a Markdown table and writes ``reports/cuda_options.json``. Needs ONNX Runtime's CUDA provider;
elsewhere it says why not and exits 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.hostile_images import gradient
from bench.pipeline import REPO
from service.manifest import Manifest, choose_precision, load_manifest
from service.runtime import PROVIDER_NAMES, cuda_problem, open_session
from service.style import StyleTransfer, _to_input, pad_for_cascade

SHAPES = ((512, 512), (1024, 768), (768, 1024), (1024, 1024))  # (width, height)
SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
# prefer_nhwc=1 logged "Conv running in Fallback mode" for every convolution on the H200 and did
# not finish 15 rounds in the time the others took; 0 (the default) is measured.
NHWC = ("0",)


def variants(manifest: Manifest) -> dict[str, str]:
    """``precision -> file`` of the stylizer's variants in the export."""
    entry = manifest.models.stylizer
    out = {"fp32": entry.path}
    served = choose_precision("stylizer", entry, "auto", on_cuda=True)[1]  # what the service picks on CUDA
    for precision, variant in entry.variants.items():
        label = precision if precision == served else f"{precision} (not served: out of its parity bound)"
        out[label] = variant.path
    return out


def call_ms(style: StyleTransfer, session, x: np.ndarray, preset: str) -> float:
    """One stylizer call on ``x`` with ``preset``'s statistics, in milliseconds."""
    start = time.perf_counter()
    style.run_stylizer(session, x, style.resident[preset], 1.0)
    return (time.perf_counter() - start) * 1000


def open_all(exports: Path, manifest: Manifest, names: list[str], encoder, preset: str) -> list[dict]:
    """One session per precision and setting, each timed as it opens and on its first call in each
    shape: measured before any warm round, since a cold shape is what the first call pays for."""
    entries = []
    for precision, file in variants(manifest).items():
        for search in SEARCH:
            for nhwc in NHWC:
                options = {"cudnn_conv_algo_search": search, "prefer_nhwc": nhwc}
                start = time.perf_counter()
                session = open_session(exports / file, names, cuda_options=options)
                opened = time.perf_counter() - start
                assert session.get_providers()[0] == PROVIDER_NAMES["cuda"], session.get_providers()
                style = StyleTransfer(exports, manifest.style, encoder, session)
                inputs = [_to_input(pad_for_cascade(gradient(w, h), style.multiple, style.step)) for w, h in SHAPES]
                first = [call_ms(style, session, x, preset) for x in inputs]
                print(
                    f"{precision} {search} nhwc={nhwc}: opened in {opened:.2f} s, first calls (ms) {first}", flush=True
                )
                entries.append(
                    {
                        "precision": precision,
                        **options,
                        "open_s": opened,
                        "first_ms": first,
                        "warm": [],
                        "repeated": [],
                        "run": (style, session, inputs),
                    }
                )
    return entries


def time_rounds(entries: list[dict], rounds: int, preset: str) -> None:
    """The warm calls, in rounds over all the sessions, each round in a new random order: a GPU
    whose clock drifts during the run slows every session alike."""
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for i in order.permutation(len(entries)):
            style, session, inputs = entries[i]["run"]
            entries[i]["warm"].append([call_ms(style, session, x, preset) for x in inputs])
            for _ in range(2):  # the shape changes on the first; the second repeats it
                style.run_stylizer(session, inputs[0], style.resident[preset], 1.0)
            entries[i]["repeated"].append(call_ms(style, session, inputs[0], preset))


def summarise(entries: list[dict], shapes: list[str]) -> list[str]:
    """Medians into ``entries`` (their sessions dropped, so they serialise); the Markdown table's lines."""
    lines = [
        "| precision | cudnn_conv_algo_search | prefer_nhwc | open (s) | "
        + " | ".join(f"{s} first / alternating (ms)" for s in shapes)
        + f" | {shapes[0]} repeated (ms) | worst first / alternating |",
        "|---|---|---|---|" + "---|" * len(shapes) + "---|---|",
    ]
    for e in entries:
        del e["run"]
        e["warm_ms"] = [statistics.median(t[k] for t in e["warm"]) for k in range(len(SHAPES))]
        del e["warm"]
        e["repeated_ms"] = statistics.median(e.pop("repeated"))
        worst = max(f / w for f, w in zip(e["first_ms"], e["warm_ms"]))
        e["worst_first_over_warm"] = worst
        lines.append(
            f"| {e['precision']} | {e['cudnn_conv_algo_search']} | {e['prefer_nhwc']} | {e['open_s']:.2f} | "
            + " | ".join(f"{f:.1f} / {w:.2f}" for f, w in zip(e["first_ms"], e["warm_ms"]))
            + f" | {e['repeated_ms']:.2f} | {worst:.1f}× |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cuda_options", description=__doc__.split("\n\n")[0])
    p.add_argument("--exports", type=Path, default=REPO / "exports")
    p.add_argument("--rounds", type=int, default=15, help="warm rounds per shape and session")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "cuda_options.json")
    args = p.parse_args(argv)
    problem = cuda_problem()
    if problem:
        print(f"CUDA provider not usable here: {problem}", file=sys.stderr)
        return 1
    exports = args.exports.resolve()
    manifest = load_manifest(exports)
    names = [PROVIDER_NAMES["cuda"], PROVIDER_NAMES["cpu"]]
    encoder = open_session(exports / manifest.models.style_encoder.path, names)
    preset = manifest.style.presets[0].name
    entries = open_all(exports, manifest, names, encoder, preset)
    time_rounds(entries, args.rounds, preset)
    shapes = [f"{w}x{h}" for w, h in SHAPES]
    lines = summarise(entries, shapes)
    import onnxruntime as ort

    report = {"onnxruntime": ort.__version__, "shapes": shapes, "rounds": args.rounds, "results": entries}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
