"""Start-up: the export verified, one ONNX Runtime session per model at the precision asked for,
each fp16 variant run once where it will serve, the samplers built, the promised shapes warmed.

``Models`` is what the endpoints serve from; nothing here answers a request.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.admission import HeavyWork
from service.api import MAX_SAMPLES
from service.gan import GanSampler
from service.lifecycle import LIFECYCLE
from service.manifest import ExportWatch, ManifestError, ModelEntry, choose_precision, load_manifest
from service.metrics import export_provider_gauges
from service.runtime import PROVIDER_NAMES, Cpus, device_name, open_session, providers_from_settings
from service.sampling import latents_for_seeds, seed_range
from service.settings import Settings
from service.style import StyleTransfer

logger = logging.getLogger("atelier")
FP16_ROLES = ("generator", "stylizer")  # the models `make export` writes an fp16 variant of
STYLE_ROLES = ("style_encoder", "stylizer")
# Stylisation shapes warmed before the service reports ready (the default max_side, square and 4:3).
WARM_FIRST = ((256, 256), (384, 512), (512, 384), (512, 512))


class Models:
    """The verified export's models, ready to serve: ``gan`` and ``style`` (None when the export
    has no such model), the sessions, the file and precision each serves, the device."""

    def __init__(self, settings: Settings, cpus: Cpus, heavy: HeavyWork):
        self.settings, self.cpus, self.heavy = settings, cpus, heavy
        self.exports: Path = settings.exports
        self.providers = providers_from_settings(settings)  # strict `cuda`: the GPU or refuse to start
        self.manifest = load_manifest(self.exports)  # every file's sha256 verified
        self.roles: dict[str, ModelEntry] = self.manifest.models.roles()
        self.watch = ExportWatch(self.exports, self.manifest)
        on_cuda = self.providers.names[0] == PROVIDER_NAMES["cuda"]
        # The style encoder (uploaded styles' statistics) is exported in fp32 only, whatever is asked.
        self.files = {
            role: choose_precision(role, entry, settings.precision if role in FP16_ROLES else "fp32", on_cuda)
            for role, entry in self.roles.items()
        }
        self.sessions: dict[str, Any] = {role: self._open(role) for role in self.roles}
        self.precision_fallback: dict[str, str] = {}
        self._build()
        self._check_fp16()
        self.device = device_name(self.provider(next(iter(self.sessions))) if self.sessions else "")
        first = PROVIDER_NAMES[self.providers.spec.split(",")[0]]
        export_provider_gauges({role: self.provider(role) for role in self.sessions}, first)
        self.warm_shapes: set[tuple[int, int]] = set()

    def provider(self, role: str) -> str:
        """The execution provider ``role``'s session actually runs on."""
        return self.sessions[role].get_providers()[0]

    def model_id(self, role: str) -> str:
        return f"{role}@{self.roles[role].sha256[:12]}"

    def _session(self, role: str, **options: Any):
        return open_session(
            self.exports / self.files[role][0],
            self.providers.names,
            cuda_options=self.providers.cuda_options,
            threads=self.cpus.count,
            **options,
        )

    def _open(self, role: str):
        """The style sessions are created on a heavy-work thread: their thread pools inherit its low priority."""
        if role in STYLE_ROLES:
            return self.heavy.on_heavy_thread(lambda: self._session(role, spinning=False))
        return self._session(role)

    def _build(self) -> None:
        """The GAN sampler and the style transfer over the current sessions."""
        self.gan = None
        models = self.manifest.models
        if models.generator is not None:
            self.gan = GanSampler(self.sessions["generator"], models.generator, batching=self.settings.sample_batching)
        self.style = None
        if self.manifest.style is not None:
            large = None  # an arena-less session for large inputs: the CPU arena's concern only (style.py)
            if self.provider("stylizer") == PROVIDER_NAMES["cpu"]:
                large = self.heavy.on_heavy_thread(lambda: self._session("stylizer", arena=False, spinning=False))
            self.style = StyleTransfer(
                self.exports,
                self.manifest.style,
                self.sessions["style_encoder"],
                self.sessions["stylizer"],
                large,
                bucket=self.settings.shape_bucket,
            )

    def _check_fp16(self) -> None:
        """Each fp16 model run once on the provider it serves on: its parity was measured at export on
        the CPU, and the stylizer's variant once gave NaN on every pixel on CUDA while the CPU
        provider scored it at 39 dB. Not finite: ``auto`` serves fp32 (said), ``fp16`` refuses."""
        for role in [r for r in FP16_ROLES if r in self.sessions and self.files[r][1] == "fp16"]:
            problem = self.heavy.on_heavy_thread(lambda role=role: self._not_finite(role))
            if problem is None:
                continue
            if self.settings.precision == "fp16":
                raise ManifestError(f"ATELIER_PRECISION=fp16: {role}'s fp16 variant {problem}; use auto or fp32")
            logger.error("%s: its fp16 variant %s on %s; serving the fp32 model", role, problem, self.provider(role))
            self.precision_fallback[role] = problem
            self.files[role] = (self.roles[role].path, "fp32")
            self.sessions[role] = self._open(role)
            self._build()

    def _not_finite(self, role: str) -> str | None:
        """None when ``role``'s model gives finite outputs on a fixed input (4 seeds; a 96x80
        gradient in the first preset), else what it gave."""
        if role == "generator":
            out = self.gan.generate(
                latents_for_seeds(seed_range(0, 4), self.gan.latent_dim), self.gan.default_labels(4)
            )
        else:
            ramp = np.linspace(0, 255, 96, dtype=np.float32)
            picture = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:80, None], np.float32(128)), -1)
            out = self.style.stylize_padded(picture.astype(np.uint8), next(iter(self.style.presets)), 1.0)
        bad = ~np.isfinite(out)
        return f"gave non-finite values ({bad.mean():.0%} of its output)" if bad.any() else None

    def warm_up(self) -> None:
        """Run each model once at the shapes served most, so the first request pays no set-up cost.

        With shape buckets (CUDA), the service is ready once the ``WARM_FIRST`` shapes are warm;
        every other shape an input of long side 512 or 256 can take warms in the background, one
        at a time, while no stylisation is waiting."""
        if self.gan:
            for n in (1, MAX_SAMPLES):
                self.gan.sample(0, n, 1.0, self.gan.default_labels(n))
        if not self.style:
            return
        for h, w in WARM_FIRST:  # the last one, 512x512, also the arena's high-water mark
            started = time.monotonic()
            self._warm_shape(h, w)
        self.heavy.seconds_per_pixel = (time.monotonic() - started) / (512 * 512)
        if self.style.step >= 64:
            later = [hw for side in (512, 256) for hw in self.style.bucket_shapes(side) if hw not in self.warm_shapes]
            threading.Thread(target=self._warm_in_background, args=(later,), name="warm-shapes", daemon=True).start()

    def _warm_shape(self, h: int, w: int) -> None:
        shape = self.style.padded_size(h, w)
        if shape not in self.warm_shapes:
            preset = next(iter(self.style.presets))
            self.heavy.on_heavy_thread(
                lambda: self.style.stylize(np.full((*shape, 3), 128, np.uint8), preset, 1.0, False, max(shape))
            )
            self.warm_shapes.add(shape)

    def _warm_in_background(self, shapes: list[tuple[int, int]]) -> None:
        for h, w in shapes:
            while not self.heavy.idle() and not LIFECYCLE.draining:
                time.sleep(0.5)
            if LIFECYCLE.draining:
                return
            self._warm_shape(h, w)
