"""GAN sampling on an ONNX Runtime session of ``generator.onnx`` (numpy in, uint8 images out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from service.sampling import latents_for_seeds, lerp, seed_range, slerp, to_uint8


class GanSampler:
    def __init__(self, session: ort.InferenceSession, entry: dict[str, Any]):
        self.session = session
        self.entry = entry
        self.latent_dim: int = entry["latent_dim"]
        self.labels: list[str] | None = entry.get("class_labels")
        self.input_names = [i["name"] for i in entry["inputs"]]

    @property
    def num_classes(self) -> int:
        return len(self.labels) if self.labels else 0

    def default_labels(self, n: int) -> list[int] | None:
        """Without an explicit label, image i of a conditional model shows class i mod K."""
        return [i % self.num_classes for i in range(n)] if self.num_classes else None

    def run(self, z: np.ndarray, labels: list[int] | None) -> np.ndarray:
        """Latents (N, D) float32 [and labels] -> uint8 images (N, H, W, C)."""
        feed = {"z": np.ascontiguousarray(z, dtype=np.float32)}
        if self.num_classes:
            feed["label"] = np.asarray(labels, dtype=np.int64)
        (images,) = self.session.run(["image"], feed)
        return to_uint8(images)

    def sample(self, seed: int, n: int, truncation: float, labels: list[int] | None) -> tuple[list[int], np.ndarray]:
        seeds = seed_range(seed, n)
        return seeds, self.run(latents_for_seeds(seeds, self.latent_dim, truncation), labels)

    def interpolate(self, seed_a: int, seed_b: int, steps: int, method: str, truncation: float,
                    label: int | None) -> np.ndarray:
        za, zb = latents_for_seeds([seed_a, seed_b], self.latent_dim, truncation)
        t = np.linspace(0.0, 1.0, steps)
        z = slerp(za, zb, t) if method == "slerp" else lerp(za, zb, t)
        labels = [label if label is not None else 0] * steps if self.num_classes else None
        return self.run(z, labels)
