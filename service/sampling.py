"""Latent maths for GAN sampling, in numpy (the service never imports torch).

The seed -> latent rule is the contract between training and serving, and this is its one
definition: training imports it from here (the arrow points from training to this numpy-only
module, never back) and records it in the manifest (``models.generator.latent``). Image ``i`` of
a request with seed ``s`` uses seed ``(s + i) mod 2**32``, and a seed's latent is drawn from its
own PCG64 generator, so it never depends on its batch.
"""

from __future__ import annotations

import numpy as np

UINT32 = 2**32
LATENT_RULE = {
    "distribution": "standard_normal",
    "rng": "numpy.random.Generator(numpy.random.PCG64(seed)).standard_normal(latent_dim, dtype=float32)",
    "seeds": "image i of a request with seed s uses seed (s + i) mod 2**32",
    "truncation": "z * truncation, truncation in (0, 1]",
}


def seed_range(seed: int, n: int) -> list[int]:
    return [(seed + i) % UINT32 for i in range(n)]


def latents_for_seeds(seeds: list[int], latent_dim: int, truncation: float = 1.0) -> np.ndarray:
    """(len(seeds), latent_dim) float32 standard-normal latents, scaled by ``truncation`` in (0, 1]."""
    z = np.stack([np.random.Generator(np.random.PCG64(s)).standard_normal(latent_dim, dtype=np.float32) for s in seeds])
    return z * np.float32(truncation)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Straight-line interpolation between two vectors at fractions ``t`` (K,) -> (K, D)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return ((1.0 - t) * a[None, :] + t * b[None, :]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake): follows the great circle, so norms stay typical of the prior.

    Falls back to ``lerp`` when the vectors are (anti)parallel and the arc is undefined.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return lerp(a, b, t)
    t = np.asarray(t, dtype=np.float64)[:, None]
    out = (np.sin((1.0 - t) * omega) * a64 + np.sin(t * omega) * b64) / np.sin(omega)
    return out.astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator output (N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounded to nearest (as training does)."""
    x = np.rint((images.astype(np.float32) + 1.0) * 127.5)
    return np.clip(x, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
