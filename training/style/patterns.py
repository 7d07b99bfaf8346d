"""Graphic patterns drawn procedurally: styles whose motif is known exactly.

The registries ship few paintings and prints (``pictures/SOURCES.md``), so the evaluation set and
the presets are topped up with patterns drawn here, seeded and anti-aliased (each pixel the mean of
4 x 4 samples). Stripes also test that a stylizer carries a style's shapes: their period is known.
Each function returns (H, W, 3) uint8.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SUPERSAMPLE = 4


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample coordinates (y, x) in pixels, SUPERSAMPLE^2 per pixel: arrays (h*S, w*S)."""
    s = SUPERSAMPLE
    y = (np.arange(h * s) + 0.5) / s
    x = (np.arange(w * s) + 0.5) / s
    return np.meshgrid(y, x, indexing="ij")


def _render(mask_to_colour: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h*S, w*S, 3) float colours -> (h, w, 3) uint8, each pixel the mean of its samples."""
    s = SUPERSAMPLE
    pixels = mask_to_colour.reshape(h, s, w, s, 3).mean((1, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _paint(
    masks: list[np.ndarray], colours: list[tuple[int, int, int]], background: tuple[int, int, int]
) -> np.ndarray:
    out = np.empty((*masks[0].shape, 3)) if masks else None
    out[:] = background
    for mask, colour in zip(masks, colours):
        out[mask] = colour
    return out


def stripes(
    h: int = 512,
    w: int = 512,
    period: float = 24.0,
    angle: float = 45.0,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((200, 40, 40), (240, 220, 180)),
) -> np.ndarray:
    """Straight stripes, ``period`` pixels from one stripe to the next, at ``angle`` degrees."""
    y, x = _grid(h, w)
    t = np.deg2rad(angle)
    phase = (x * np.cos(t) + y * np.sin(t)) / period
    return _render(_paint([(phase % 1.0) < 0.5], [colours[0]], colours[1]), h, w)


def dots(
    h: int = 512,
    w: int = 512,
    spacing: float = 40.0,
    radius: float = 12.0,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((20, 60, 140), (245, 235, 200)),
) -> np.ndarray:
    """Polka dots on a staggered (hexagonal) grid."""
    y, x = _grid(h, w)
    row = np.floor(y / spacing)
    xs = x - (row % 2) * spacing / 2
    dy = y - (row + 0.5) * spacing
    dx = xs - (np.floor(xs / spacing) + 0.5) * spacing
    return _render(_paint([dx**2 + dy**2 < radius**2], [colours[0]], colours[1]), h, w)


def chevrons(
    h: int = 512,
    w: int = 512,
    period: float = 48.0,
    amplitude: float = 24.0,
    colours: tuple[tuple[int, int, int], ...] = ((30, 30, 30), (230, 180, 40), (240, 240, 235)),
) -> np.ndarray:
    """Zigzag bands in three colours."""
    y, x = _grid(h, w)
    zig = amplitude * np.abs(((x / period) % 1.0) * 2 - 1)
    band = np.floor((y + zig) / (period / 2)).astype(int) % len(colours)
    out = np.asarray(colours, dtype=float)[band]
    return _render(out, h, w)


def rings(
    h: int = 512,
    w: int = 512,
    period: float = 20.0,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((10, 10, 10), (250, 250, 250)),
    centres: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Op-art: concentric rings around a few centres, the ring parity of their sum (moiré-like)."""
    rng = np.random.default_rng(seed)
    y, x = _grid(h, w)
    total = np.zeros_like(x)
    for cy, cx in rng.uniform(0, 1, (centres, 2)) * (h, w):
        total += np.floor(np.hypot(y - cy, x - cx) / period)
    return _render(_paint([total % 2 == 0], [colours[0]], colours[1]), h, w)


def truchet(
    h: int = 512,
    w: int = 512,
    tile: float = 32.0,
    width: float = 5.0,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((240, 120, 30), (25, 40, 60)),
    seed: int = 0,
) -> np.ndarray:
    """Truchet tiles: quarter-circle arcs joining tile edges, each tile turned at random."""
    rng = np.random.default_rng(seed)
    y, x = _grid(h, w)
    ty, tx = np.floor(y / tile).astype(int), np.floor(x / tile).astype(int)
    flip = rng.integers(0, 2, (ty.max() + 1, tx.max() + 1))[ty, tx].astype(bool)
    u, v = x / tile - tx, y / tile - ty  # position inside the tile, [0, 1)
    u = np.where(flip, 1 - u, u)
    r = width / tile
    line = (np.abs(np.hypot(u, v) - 0.5) < r) | (np.abs(np.hypot(u - 1, v - 1) - 0.5) < r)
    return _render(_paint([line], [colours[0]], colours[1]), h, w)


def checks(
    h: int = 512,
    w: int = 512,
    cell: float = 32.0,
    colours: tuple[tuple[int, int, int], ...] = ((180, 30, 40), (245, 240, 230), (30, 60, 120)),
) -> np.ndarray:
    """A tartan-like check: two crossing sets of bands of unequal widths, mixed where they cross."""
    y, x = _grid(h, w)
    widths = np.array([1.0, 0.25, 0.5, 0.25])
    edges = np.cumsum(widths) / widths.sum()

    def band(t: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, (t / (cell * 2)) % 1.0, side="right") % len(colours)

    palette = np.asarray(colours, dtype=float)
    return _render((palette[band(x)] + palette[band(y)]) / 2, h, w)


PATTERNS: dict[str, Callable[..., np.ndarray]] = {
    "stripes": stripes,
    "dots": dots,
    "chevrons": chevrons,
    "rings": rings,
    "truchet": truchet,
    "checks": checks,
}
