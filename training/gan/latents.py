"""Seeds to latent vectors: the contract shared with the service (recorded in the manifest).

Image ``i`` of a request with seed ``s`` uses seed ``(s + i) mod 2**32``; a seed's latent is
``numpy.random.Generator(PCG64(seed)).standard_normal(latent_dim, dtype=float32)``, scaled by the
truncation factor. The service implements the same rule in numpy; tests check that they agree.
"""

from __future__ import annotations

import numpy as np

LATENT_RULE = {
    "distribution": "standard_normal",
    "rng": "numpy.random.Generator(numpy.random.PCG64(seed)).standard_normal(latent_dim, dtype=float32)",
    "seeds": "image i of a request with seed s uses seed (s + i) mod 2**32",
    "truncation": "z * truncation, truncation in (0, 1]",
}


def seed_range(seed: int, n: int) -> list[int]:
    return [(seed + i) % 2**32 for i in range(n)]


def latents_for_seeds(seeds: list[int], latent_dim: int, truncation: float = 1.0) -> np.ndarray:
    """(len(seeds), latent_dim) float32: one generator per seed, so a seed's image never depends on its batch."""
    z = np.stack([np.random.Generator(np.random.PCG64(s)).standard_normal(latent_dim, dtype=np.float32) for s in seeds])
    return z * np.float32(truncation)
