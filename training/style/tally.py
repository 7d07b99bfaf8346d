"""The quality report's arithmetic: means over pairs, the ``strength`` sweeps as curves, and the
comparison of two methods at equal content distance (``report.py`` runs, ``sheet.py`` shows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SPACES = ("vgg", "effnet")
METRICS = ("vgg_style", "vgg_content", "effnet_style", "effnet_content", "seconds")


def method_means(pairs: Sequence[dict[str, Any]], key: str = "methods") -> dict[str, dict[str, float]]:
    """Mean of every metric of every method present in all ``pairs`` (``pair[key][method][metric]``)."""
    methods = [m for m in pairs[0][key] if all(m in p[key] for p in pairs)]
    return {
        m: {k: float(np.mean([p[key][m][k] for p in pairs])) for k in pairs[0][key][m] if k in METRICS} for m in methods
    }


def means_by_style(pairs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``method_means`` of each style's pairs: a mean of ratios can be carried by one style."""
    styles = dict.fromkeys(p["style"] for p in pairs)
    return {s: method_means([p for p in pairs if p["style"] == s]) for s in styles}


def sweep_means(pairs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> strength (as a string) -> mean metrics over the pairs, from each pair's ``sweep``."""
    methods = pairs[0]["sweep"]
    return {
        m: {
            s: {k: float(np.mean([p["sweep"][m][s][k] for p in pairs])) for k in pairs[0]["sweep"][m][s]}
            for s in methods[m]
        }
        for m in methods
    }


def style_at_content(curve: dict[str, dict[str, float]], space: str, content: float) -> float | None:
    """A method's mean style distance at mean content distance ``content`` in ``space``, interpolated
    linearly along its strength sweep (points ordered by content distance); None outside the sweep's
    range (no extrapolation)."""
    points = sorted((v[f"{space}_content"], v[f"{space}_style"]) for v in curve.values())
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if not xs[0] <= content <= xs[-1]:
        return None
    return float(np.interp(content, xs, ys))


def equal_content(sweeps: dict[str, dict[str, dict[str, float]]], a: str, b: str) -> dict[str, Any]:
    """For each space: ``a`` and ``b`` compared at the content distance of each one's full strength,
    the other's style read off its own sweep there (None where its sweep does not reach)."""
    out: dict[str, Any] = {}
    for space in SPACES:
        rows = {}
        for at, other in ((b, a), (a, b)):
            full = sweeps[at]["1.0"]
            content = full[f"{space}_content"]
            rows[f"at_{at}_full_strength"] = {
                "content": round(content, 4),
                f"{at}_style": round(full[f"{space}_style"], 4),
                f"{other}_style": _rounded(style_at_content(sweeps[other], space, content)),
            }
        out[space] = rows
    return out


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def convergence(history: Sequence[dict[str, float]], tail: float = 0.1) -> float:
    """How much the optimisation's total loss still fell over its last ``tail`` of steps, relative
    to the final loss (0: flat, converged)."""
    steps = history[-1]["step"]
    before = [h for h in history if h["step"] <= steps * (1 - tail)][-1]
    return float((before["total"] - history[-1]["total"]) / max(history[-1]["total"], 1e-12))
