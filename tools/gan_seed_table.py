"""The per-seed table of GAN runs in both evaluation spaces, with the mean and spread (docs/gan.md).

    python tools/gan_seed_table.py runs/gan/seed0 runs/gan/seed1 ...   # each a finished run folder

For each run: FID as a multiple of its space's real-vs-real baseline, precision and recall in
FID-LeNet and in the independent space, label agreement (FID-LeNet's classifier; the independent
one's in brackets), the epochs' time; then the mean, the sample standard deviation and the range
over the runs, and how many runs meet every bar (FID <= 1.5x in both, recall >= 0.85 in both,
label agreement >= 97%). A run measured before the independent space existed is measured again
by ``python -m training.gan.train --resume RUN --eval-sets 10``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

COLUMNS = ("fid", "precision", "recall", "ind_fid", "ind_precision", "ind_recall", "labels", "ind_labels")
BARS = {"fid": (1.5, "max"), "ind_fid": (1.5, "max"), "recall": (0.85, "min"), "ind_recall": (0.85, "min")}
BARS["labels"] = (0.97, "min")


def row(run: Path) -> dict[str, float]:
    m = json.loads((run / "metrics.json").read_text())
    ind = m.get("independent")
    if not ind:
        raise SystemExit(f"{run}: no independent space in metrics.json (measure it again: --resume RUN --eval-sets 10)")
    options = json.loads((run / "options.json").read_text())
    return {
        "seed": options["seed"],
        "fid": m["fid"] / m["baseline_real_vs_real"]["fid"],
        "precision": m["precision"],
        "recall": m["recall"],
        "ind_fid": ind["fid"] / ind["baseline_real_vs_real"]["fid"],
        "ind_precision": ind["precision"],
        "ind_recall": ind["recall"],
        "labels": m.get("label_agreement", float("nan")),
        "ind_labels": ind.get("label_agreement", float("nan")),
        "seconds": m["training_seconds"],
    }


def meets(r: dict[str, float]) -> bool:
    return all(r[k] <= bar if kind == "max" else r[k] >= bar for k, (bar, kind) in BARS.items())


def cells(r: dict[str, float]) -> list[str]:
    return [
        f"{r['fid']:.2f}× / {r['precision']:.3f} / {r['recall']:.3f}",
        f"{r['ind_fid']:.2f}× / {r['ind_precision']:.3f} / {r['ind_recall']:.3f}",
        f"{r['labels']:.1%} ({r['ind_labels']:.1%})",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="the rows and the summary as JSON instead of a table")
    args = p.parse_args(argv)
    rows = [row(run) for run in args.runs]
    summary = {
        k: {
            "mean": float(np.mean([r[k] for r in rows])),
            "std": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
            "min": float(min(r[k] for r in rows)),
            "max": float(max(r[k] for r in rows)),
        }
        for k in (*COLUMNS, "seconds")
    }
    if args.json:
        print(json.dumps({"runs": [str(r) for r in args.runs], "rows": rows, "summary": summary}, indent=2))
        return 0
    print("| seed | FID-LeNet: FID / P / R | independent: FID / P / R | labels (independent) | all bars | epochs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        bold = "**yes**" if meets(r) else "no"
        print(f"| {r['seed']} | " + " | ".join(cells(r)) + f" | {bold} | {r['seconds'] / 60:.1f} min |")
    mean = {k: v["mean"] for k, v in summary.items()}
    print("| mean | " + " | ".join(cells(mean)) + f" | {sum(map(meets, rows))} of {len(rows)} | |")
    std = {k: v["std"] for k, v in summary.items()}
    print("| std | " + " | ".join(cells(std)).replace("×", "") + " | | |")
    low = {k: v["min"] for k, v in summary.items()}
    high = {k: v["max"] for k, v in summary.items()}
    print("| range | " + " | ".join(f"{a} – {b}" for a, b in zip(cells(low), cells(high))) + " | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
