"""GAN sampling on an ONNX Runtime session of ``generator.onnx`` (numpy in, uint8 images out)."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from service.manifest import Generator
from service.sampling import latents_for_seeds, lerp, seed_range, slerp, to_uint8

MAX_BATCH = 256  # images in one merged generator run


class _Call:
    __slots__ = ("feed", "n", "wake", "result", "error")

    def __init__(self, feed: dict[str, np.ndarray]):
        self.feed, self.n = feed, len(feed["z"])
        self.wake = threading.Event()  # set when the result is in, or when this call is to lead the next run
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Generator runs that arrive while one is in progress are merged into the next, one run for all.

    No timer and no extra thread: a caller that finds the generator idle runs its own call at once
    (no added latency). Callers arriving meanwhile queue; when the run ends, the first of them
    runs everything queued (up to ``max_batch`` images) as one batch and each caller takes its
    rows. Each image depends only on its own latent and label (inference BatchNorm), so a call's
    images are the same merged or alone (checked bit for bit on CPU by the tests)."""

    def __init__(self, session: ort.InferenceSession, max_batch: int = MAX_BATCH):
        self.session, self.max_batch = session, max_batch
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._leading = False
        self.runs = self.calls = 0

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        call = _Call(feed)
        with self._lock:
            self._pending.append(call)
            lead = not self._leading
            self._leading = True
        if not lead:
            call.wake.wait()
        if call.result is None and call.error is None:  # idle on arrival, or handed the lead: run a batch
            self._run_batch()
        if call.error is not None:
            raise call.error
        return call.result

    def _run_batch(self) -> None:
        with self._lock:
            batch, count = [], 0
            while self._pending and (not batch or count + self._pending[0].n <= self.max_batch):
                batch.append(self._pending.pop(0))
                count += batch[-1].n
        try:
            feed = (
                batch[0].feed
                if len(batch) == 1
                else {k: np.concatenate([c.feed[k] for c in batch]) for k in batch[0].feed}
            )
            (images,) = self.session.run(["image"], feed)
            start = 0
            for c in batch:
                c.result, start = images[start : start + c.n], start + c.n
        except BaseException as e:  # noqa: BLE001 - every caller in the batch gets the error
            for c in batch:
                c.error = e
        with self._lock:
            self.runs += 1
            self.calls += len(batch)
            following = self._pending[0] if self._pending else None
            self._leading = following is not None
        for c in batch:
            c.wake.set()
        if following is not None:
            following.wake.set()  # it runs the next batch, its own call first


class GanSampler:
    def __init__(self, session: ort.InferenceSession, entry: Generator, batching: bool = False):
        self.session = session
        self.batcher = MicroBatcher(session) if batching else None
        self.entry = entry
        self.latent_dim = entry.latent_dim
        self.labels = entry.class_labels
        self.input_names = [i.name for i in entry.inputs]

    @property
    def num_classes(self) -> int:
        return len(self.labels) if self.labels else 0

    def default_labels(self, n: int) -> list[int] | None:
        """Without an explicit label, image i of a conditional model shows class i mod K."""
        return [i % self.num_classes for i in range(n)] if self.num_classes else None

    def run(self, z: np.ndarray, labels: list[int] | None) -> np.ndarray:
        """Latents (N, D) float32 [and labels] -> uint8 images (N, H, W, C)."""
        return to_uint8(self.generate(z, labels))

    def generate(self, z: np.ndarray, labels: list[int] | None) -> np.ndarray:
        """Latents (N, D) float32 [and labels] -> the generator's output as it is: float (N, C, H, W) in [-1, 1]."""
        feed = {"z": np.ascontiguousarray(z, dtype=np.float32)}
        if self.num_classes:
            feed["label"] = np.asarray(labels, dtype=np.int64)
        if self.batcher is not None:
            return self.batcher.run(feed)
        (images,) = self.session.run(["image"], feed)
        return images

    def sample(self, seed: int, n: int, truncation: float, labels: list[int] | None) -> tuple[list[int], np.ndarray]:
        seeds = seed_range(seed, n)
        return seeds, self.run(latents_for_seeds(seeds, self.latent_dim, truncation), labels)

    def interpolate(
        self, seed_a: int, seed_b: int, steps: int, method: str, truncation: float, label: int | None
    ) -> np.ndarray:
        za, zb = latents_for_seeds([seed_a, seed_b], self.latent_dim, truncation)
        t = np.linspace(0.0, 1.0, steps)
        z = slerp(za, zb, t) if method == "slerp" else lerp(za, zb, t)
        labels = [label if label is not None else 0] * steps if self.num_classes else None
        return self.run(z, labels)
