"""The quality report's outputs for people: the comparison sheet (``comparison.png``) and the
summary printed at the end."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from training.runs import atomic_write_bytes
from training.style.methods import PEER


def _caption(m: dict[str, float]) -> str:
    return (
        f"VGG {m['vgg_style']:.2f} / {m['vgg_content']:.2f}\n"
        f"Eff {m['effnet_style']:.2f} / {m['effnet_content']:.2f}  {m['seconds']:.2f} s"
    )


def save_sheet(
    rows: list[tuple], path: Path, vgg_info: dict[str, Any], steps: int, peer_name: str | None, strength: float = 1.0
) -> None:
    """content | style | fast (at ``strength``: the export's default) | peer | reference, one pair per
    row, metrics under each output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = ["content", "style", f"Atelier (ONNX, strength {strength:g})"]
    if peer_name:
        heads.append(f"peer ({peer_name})")
    heads.append(f"reference (Gatys, {steps} steps)")
    fig, axes = plt.subplots(len(rows), len(heads), figsize=(2.6 * len(heads), 2.9 * len(rows)), squeeze=False)
    for r, (c_name, s_name, content, style, outputs, metrics) in enumerate(rows):
        cells = [(content, c_name), (style, s_name), (outputs["fast"], _caption(metrics["fast"]))]
        if peer_name:
            cells.append((outputs[PEER], _caption(metrics[PEER])))
        cells.append((outputs["reference"], _caption(metrics["reference"])))
        for col, (img, text) in enumerate(cells):
            ax = axes[r][col]
            ax.imshow(img[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(text, fontsize=7, family="monospace")
            if r == 0:
                ax.set_title(heads[col], fontsize=9)
    random = "  RANDOM VGG WEIGHTS (tests only)" if vgg_info.get("random_weights") else ""
    fig.suptitle(
        "style / content distance (untouched content = 1 / 0; lower style is more styled) in "
        f"{vgg_info['source']} {vgg_info['arch']} and EfficientNet-Lite0 space; "
        f"held-out pictures{random}",
        fontsize=8,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def print_summary(report: dict[str, Any]) -> None:
    print(f"{'method':<10} {'VGG style':>9} {'content':>8} {'Eff style':>9} {'content':>8} {'s/image':>8}")
    for m, v in report["means"].items():
        print(
            f"{m:<10} {v['vgg_style']:9.3f} {v['vgg_content']:8.3f} {v['effnet_style']:9.3f} "
            f"{v['effnet_content']:8.3f} {v['seconds']:8.2f}"
        )
    for style, means in report["means_by_style"].items():
        print(
            f"  {style}: "
            + ", ".join(f"{m} {v['vgg_style']:.2f}/{v['effnet_style']:.2f}" for m, v in means.items() if m != "content")
            + " (VGG/EffNet style)"
        )
    for method, curve in report["sweeps"].items():
        print(
            f"  {method} by strength: "
            + ", ".join(
                f"{s} {v['vgg_style']:.2f}/{v['vgg_content']:.2f} {v['effnet_style']:.2f}/{v['effnet_content']:.2f}"
                for s, v in curve.items()
            )
            + " (VGG style/content EffNet style/content)"
        )
    for space, rows in report.get("equal_content", {}).items():
        for at, row in rows.items():
            print(f"  {space} {at}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    ref = report["reference_pairs"]
    if ref["pairs"]:
        print(
            f"reference pairs ({ref['pairs']}): "
            + ", ".join(f"{m} {v['vgg_style']:.3f}/{v['effnet_style']:.3f}" for m, v in ref["means"].items())
            + " (VGG/EffNet style); loss still falling over the last 10% of steps: "
            + ", ".join(f"{c:.1%}" for c in ref["convergence"])
        )
    psnrs = report["reconstruction_psnr_db"]
    print(
        "reconstruction PSNR (strength 0): "
        + ", ".join(f"{k} {v:.1f} dB" for k, v in psnrs.items())
        + f"; mean {np.mean(list(psnrs.values())):.1f} dB"
    )
    print(
        f"{len(report['results'])} pairs in {report['total_seconds']:.0f} s "
        f"(estimated {report['estimated_seconds']:.0f} s)"
    )
