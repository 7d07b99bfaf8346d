"""The quality report's work on its pairs: every method at every strength, scored in every feature
space, the reference where it runs, and the summaries (``report.py`` is the command line)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from torch import Tensor
from tqdm import tqdm

from training.style.functions import psnr
from training.style.gatys import stylize_by_optimisation
from training.style.methods import PEER, FastModel, PeerModel
from training.style.tally import convergence, equal_content, means_by_style, method_means, sweep_means


def run_methods(fast: FastModel, peer: PeerModel | None, content: Tensor, style_picture: np.ndarray, strengths):
    """Every method's output at every strength, and the full-strength calls' times:
    ``({method: {strength: image}}, {method: {"seconds": s}})``."""
    start = time.perf_counter()
    style = fast.style.style_stats(style_picture)  # as a request prepares an uploaded style
    outputs = {"fast": {1.0: fast.stylize(content, style, 1.0)}}
    times = {"fast": {"seconds": time.perf_counter() - start}}
    outputs["fast"].update({s: fast.stylize(content, style, s) for s in strengths if s != 1.0})
    if peer is not None:
        image, times[PEER] = peer.stylize(content, style_picture, 1.0)
        outputs[PEER] = {
            1.0: image,
            **{s: peer.stylize(content, style_picture, s, timed=False)[0] for s in strengths if s != 1.0},
        }
    return outputs, times


def evaluate_pair(spaces, fast, peer, vgg, content, style, style_picture, settings, strengths, reference: bool):
    """One pair: ``(record, images)``; the record holds each method's full-strength metrics
    (``methods``), every strength's (``sweep``), and the reference's convergence when it ran."""
    outputs, times = run_methods(fast, peer, content, style_picture, strengths)
    images = {"content": content, "sweep": outputs, **{m: by_strength[1.0] for m, by_strength in outputs.items()}}
    record: dict[str, Any] = {}
    if reference:
        start = time.perf_counter()
        images["reference"], history = stylize_by_optimisation(vgg, content, style, settings, progress=False)
        times["reference"] = {"seconds": time.perf_counter() - start}
        record["reference_convergence"] = convergence(history)
    feats = {"content": [s.features(content) for s in spaces], "style": [s.features(style) for s in spaces]}

    def scored(image: Tensor) -> dict[str, float]:
        out = {}
        for space, f_content, f_style in zip(spaces, feats["content"], feats["style"]):
            out.update(space.metrics(space.features(image), f_content, f_style))
        return out

    methods = {"content": {"seconds": 0.0, **scored(content)}}
    sweep = {m: {str(s): scored(img) for s, img in sorted(by.items())} for m, by in outputs.items()}
    for m in outputs:
        methods[m] = {**times[m], **sweep[m]["1.0"]}
    if reference:
        methods["reference"] = {**times["reference"], **scored(images["reference"])}
    return {"methods": methods, "sweep": sweep, **record}, images


def reconstruction_psnr(fast: FastModel, contents: dict[str, Tensor]) -> dict[str, float]:
    """PSNR (dB) of each content photo through the cascade at strength 0 (any style: it is unused)."""
    style = fast.style.preset_style(next(iter(fast.style.presets)))
    return {name: float(psnr(fast.stylize(img, style, 0.0).cpu(), img.cpu())) for name, img in contents.items()}


def run_pairs(spaces, fast, peer, vgg, pairs, pictures, tensors, settings, plan) -> tuple[list[dict], list[tuple]]:
    """Every pair's record, and the images of the reference pairs for the sheet (Atelier's at the
    export's default strength, the others' at full strength)."""
    run_methods(fast, peer, tensors[pairs[0][0]], pictures[pairs[0][1]], [1.0])  # warm-up: first-run costs
    results, sheet = [], []
    for i, (c_name, s_name) in enumerate(tqdm(pairs, desc="pairs", unit="pair", dynamic_ncols=True)):
        content, style = tensors[c_name], tensors[s_name]
        with_reference = i < plan["reference_pairs"]
        record, images = evaluate_pair(
            spaces, fast, peer, vgg, content, style, pictures[s_name], settings, plan["strengths"], with_reference
        )
        results.append({"content": c_name, "style": s_name, "size_hw": list(content.shape[2:]), **record})
        if with_reference and len(sheet) < plan["sheet_rows"]:
            default = plan["default_strength"]
            shown = {**images, "fast": images["sweep"]["fast"][default]}
            metrics = {
                **record["methods"],
                "fast": {**record["methods"]["fast"], **record["sweep"]["fast"][str(default)]},
            }
            sheet.append((c_name, s_name, content, style, shown, metrics))
    return results, sheet


def summarise(results: list[dict[str, Any]], has_peer: bool) -> dict[str, Any]:
    """Means over all pairs, per style, over the reference's pairs, the sweeps' curves and (with the
    peer) the comparison at equal content distance."""
    with_ref = [r for r in results if "reference" in r["methods"]]
    sweeps = sweep_means(results)
    summary = {
        "means": method_means(results),
        "means_by_style": means_by_style(results),
        "sweeps": sweeps,
        "reference_pairs": {
            "pairs": len(with_ref),
            "means": method_means(with_ref) if with_ref else {},
            "convergence": [r["reference_convergence"] for r in with_ref],
        },
    }
    if has_peer:
        summary["equal_content"] = equal_content(sweeps, "fast", PEER)
    return summary
