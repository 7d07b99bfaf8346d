"""A style's fine texture as a small periodic tile: Heeger & Bergen's texture synthesis (1995,
"Pyramid-based texture analysis/synthesis"), in numpy (the service computes it for uploaded styles,
the export for the presets, with this same code).

The stylizer's feature transform gives the photo the style's colours and its feature covariance,
which is a Gaussian description: where the photo is smooth (a sky, a wall) nothing in it can turn
into the style's stars, cells or speckles. A Laplacian pyramid of noise whose every band is given
the histogram of the same band of the style (in the style's principal colour axes) has the style's
sparse, heavy-tailed detail: bright points where the style has stars, speckle where it has cells.
``detail_tile`` returns the finest bands of such a synthesis (zero-mean, periodic, so that it tiles
any size seamlessly); the stylizer adds it where its own output is smooth (``training/style/model.py``,
``add_texture``).
"""

from __future__ import annotations

import numpy as np

TILE = 256  # the tile's side: its pattern repeats every TILE pixels of the output
BANDS = 4  # the pyramid's band-pass levels (plus the low-pass residual)
DETAIL_BANDS = 2  # the finest bands kept in the tile (structure of about 1-4 px)
ITERATIONS = 2
QUANTILES = 256
SEED = 0
_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16  # binomial low-pass


def _blur(x: np.ndarray, wrap: bool) -> np.ndarray:
    """The 5x5 binomial blur of (C, H, W), edges periodic (``wrap``) or mirrored."""
    for axis in (1, 2):
        if wrap:
            x = sum(t * np.roll(x, k, axis=axis) for k, t in zip(range(-2, 3), _TAPS))
        else:
            n = x.shape[axis]
            padded = np.pad(x, [(0, 0)] + [(2, 2) if a == axis else (0, 0) for a in (1, 2)], mode="reflect")
            x = sum(t * np.take(padded, np.arange(k, k + n), axis=axis) for k, t in enumerate(_TAPS))
    return x.astype(np.float32)


def _down(x: np.ndarray, wrap: bool) -> np.ndarray:
    return _blur(x, wrap)[:, ::2, ::2]


def _up(x: np.ndarray, shape: tuple[int, int], wrap: bool) -> np.ndarray:
    """Twice the size (zeros between the samples, then the blur, times 4), cut to ``shape``."""
    out = np.zeros((x.shape[0], 2 * x.shape[1], 2 * x.shape[2]), dtype=np.float32)
    out[:, ::2, ::2] = x
    return 4 * _blur(out, wrap)[:, : shape[0], : shape[1]]


def pyramid(x: np.ndarray, levels: int = BANDS, wrap: bool = False) -> list[np.ndarray]:
    """Laplacian pyramid of (C, H, W): ``levels`` band-pass images, finest first, then the low-pass."""
    bands = []
    for _ in range(levels):
        small = _down(x, wrap)
        bands.append(x - _up(small, x.shape[1:], wrap))
        x = small
    return [*bands, x]


def collapse(bands: list[np.ndarray], wrap: bool = False) -> np.ndarray:
    x = bands[-1]
    for band in reversed(bands[:-1]):
        x = _up(x, band.shape[1:], wrap) + band
    return x


def quantiles(x: np.ndarray, q: int = QUANTILES) -> np.ndarray:
    """(C, ...) -> (C, q): each channel's values at the probabilities (i + 0.5) / q."""
    flat = x.reshape(x.shape[0], -1)
    return np.quantile(flat, (np.arange(q) + 0.5) / q, axis=1).T.astype(np.float32)


def match_histograms(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(C, ...) with each channel's values replaced, rank for rank, by the distribution whose
    ``quantiles`` are ``target`` (C, q), linearly interpolated."""
    flat = x.reshape(x.shape[0], -1)
    n, q = flat.shape[1], target.shape[1]
    at = np.interp((np.arange(n) + 0.5) / n, (np.arange(q) + 0.5) / q, np.arange(q))  # rank -> quantile index
    out = np.empty_like(flat)
    for c in range(flat.shape[0]):
        out[c, np.argsort(flat[c], kind="stable")] = np.interp(at, np.arange(q), target[c])
    return out.reshape(x.shape)


def detail_tile(pixels: np.ndarray, side: int = TILE, seed: int = SEED) -> np.ndarray:
    """The fine texture of a style image (H, W, 3) uint8: (3, side, side) float32, RGB in [0, 1]
    units, zero-mean, periodic. Deterministic for the same image.

    The style is analysed in its principal colour axes (the eigenvectors of its 3 x 3 colour
    covariance): the histogram of every band of its Laplacian pyramid (``analyse``). A periodic noise
    tile is given those histograms, band by band, ``ITERATIONS`` times (``synthesize``); the tile is
    its ``DETAIL_BANDS`` finest bands, taken back to RGB. (Heeger and Bergen also match the pixels'
    histogram between iterations; here that turned the retina's black surround into blobs whose
    outlines the fine bands kept, so only the bands are matched.)
    """
    axes, targets = analyse(pixels)
    noise = np.random.default_rng(seed).standard_normal((3, side, side)).astype(np.float32)
    return synthesize(axes, targets, noise)


def analyse(pixels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A style image (H, W, 3) uint8 -> its principal colour axes (3, 3), rows, and the ``quantiles``
    of each band of its ``pyramid`` in those axes (finest first, then the low-pass)."""
    x = pixels.astype(np.float32).transpose(2, 0, 1).reshape(3, -1) / 255.0
    _, axes = np.linalg.eigh(np.cov(x).astype(np.float64))
    axes = axes.T.astype(np.float32)
    style = (axes @ (x - x.mean(axis=1, keepdims=True))).reshape(3, *pixels.shape[:2])
    return axes, [quantiles(b) for b in pyramid(style)]


def synthesize(axes: np.ndarray, targets: list[np.ndarray], noise: np.ndarray) -> np.ndarray:
    """A periodic tile from ``noise`` (3, T, T), T a multiple of 2 ** ``BANDS``: its bands given the
    ``targets`` histograms ``ITERATIONS`` times, then its ``DETAIL_BANDS`` finest bands in RGB."""
    y = noise
    for _ in range(ITERATIONS):
        y = collapse([match_histograms(b, q) for b, q in zip(pyramid(y, wrap=True), targets)], wrap=True)
    bands = pyramid(y, wrap=True)
    detail = collapse([b if i < DETAIL_BANDS else np.zeros_like(b) for i, b in enumerate(bands)], wrap=True)
    return (axes.T @ detail.reshape(3, -1)).reshape(noise.shape).astype(np.float32)
