"""Atelier's HTTP service: BentoML on ONNX Runtime. ``bentoml serve`` (see bentofile.yaml).

Configuration: the ``ATELIER_*`` environment variables, read once by ``service/settings.py``
(the one mechanism; the README's table lists them).
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import bentoml
import numpy as np
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, Field, Strict
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from service import __version__
from service.access import KeyGuard
from service.admission import ClientGone, HeavyWork, Overloaded
from service.animation import decode_animation, encode_animation
from service.errors import error_response
from service.gan import GanSampler
from service.images import (
    FORMATS,
    ImageInputError,
    check_header,
    decode_image,
    encode_image,
    fit_within,
    read_header,
    tile_grid,
)
from service.lifecycle import LIFECYCLE, TrafficGuard
from service.limits import BodyGuard, UploadBudget
from service.manifest import ExportWatch, ManifestError, choose_precision, load_manifest
from service.metrics import QueueMetrics, export_provider_gauges
from service.openapi import ApiDocs, openapi_document
from service.request_id import RequestIds, log_request_ids
from service.runtime import (
    PROVIDER_NAMES,
    available_memory,
    cpu_budget,
    device_name,
    keep_large_blocks_returnable,
    open_session,
    providers_from_settings,
)
from service.sampling import latents_for_seeds, seed_range
from service.settings import Settings
from service.style import StyleTransfer, mix_stats, resize_long_side

SETTINGS = Settings.from_environment()  # a bad value refuses to start, naming the variable
PLAYGROUND = Path(__file__).resolve().parent / "playground"
logger = logging.getLogger("atelier")
logger.setLevel(logging.INFO)  # our start-up line beside BentoML's (the root logger stays at its level)
MAX_SAMPLES = 64
MAX_STEPS = 64
JSON_BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 20 * 1024 * 1024  # per image file
MAX_MEGAPIXELS = 40
IMAGE_LIMITS = {"max_bytes": UPLOAD_LIMIT, "max_pixels": MAX_MEGAPIXELS * 1_000_000}  # every uploaded image
FORM_BODY_LIMIT = 2 * UPLOAD_LIMIT + 1024 * 1024  # a multipart body: content + style + form fields
PRESET_NAME = r"^[a-z0-9_-]{1,64}$"
MAX_STYLES = 8  # styles blended in one request, presets and uploads together
CPUS = cpu_budget(SETTINGS.cpus)
REQUEST_THREADS = max(4, 2 * CPUS.count)  # threads for the cheap endpoints (BentoML's pool, and sample's)
MAX_IN_FLIGHT = 32  # API requests at once per worker (stylize has its own queue); one more: 429 + Retry-After
# Peak memory of a stylisation per output pixel, measured with the quick profile's model on CPU
# (arena off: 1.5 GB at 1024 px, 5.8 GB at 2048 px, less a 0.2 GB base), with a margin.
STYLIZE_BYTES_PER_PIXEL = 1500
STYLIZE_BASE_BYTES = 200 * 2**20
# Animated content (GIF, WebP): frames x output pixels stylised in one request, and frames x canvas
# pixels decoded (each frame is composited at the file's full size before it is resized).
ANIMATION_MAX_FRAMES = 300
ANIMATION_MAX_MEGAPIXELS = 16  # e.g. 60 frames at 512x512, 200 at 320x240; about 2.4 us a pixel on 2 cores
ANIMATION_MAX_DECODE_MEGAPIXELS = 200
ANIMATION_BYTES_PER_PIXEL = 6  # the decoded and the stylised frames, uint8 RGB, held until encoded
# Generated samples stylised on the way out (sample/sample_grid with style_name) are first
# enlarged to this long side (Lanczos), so that the style has room to show on a 32-px digit.
SAMPLE_STYLE_SIDE = 256
# Stylisation shapes warmed before the service reports ready (the default max_side, square and 4:3).
WARM_FIRST = ((256, 256), (384, 512), (512, 384), (512, 512))

Format = Literal["png", "jpeg", "webp"]
StyleFormat = Literal["png", "jpeg", "webp", "gif"]
Seed = Annotated[int, Strict(), Ge(0), Le(2**32 - 1)]
# Strict: a boolean or a string is refused, not read as a number (the OpenAPI document says number).
Truncation = Annotated[float, Strict(), Gt(0.0), Le(1.0)]
Strength = Annotated[float, Strict(), Ge(0.0), Le(1.0)]
Weights = str | Annotated[float, Strict()] | list[Annotated[float, Strict()]] | None
Flag = Annotated[bool, Strict()]
Label = Annotated[int, Strict(), Ge(0)]


class SampleResponse(BaseModel):
    seed: int = Field(description="the request's seed (uint32), echoed; image i used seed + i")
    seeds: list[int]
    labels: list[int] | None
    images: list[str] = Field(description="base64-encoded image files")
    format: str
    width: int
    height: int
    model: str
    style: str | None = Field(
        default=None,
        description="the style the samples were painted in, if any, as "
        "stylize's X-Atelier-Style says it (preset:name, upload, blends)",
    )


class Preset(BaseModel):
    name: str
    source: str = Field(description="bundled:<name> (shipped with Atelier) or file:<path in STYLES_DIR>")
    credit: str | None = Field(default=None, description="what it is, its rights, package and licence")
    thumbnail: str = Field(description="base64-encoded image file")
    thumbnail_format: Literal["jpeg"] = "jpeg"


class StylesResponse(BaseModel):
    styles: list[Preset]


@dataclass(frozen=True)
class Stylisation:
    """A checked stylize request, as the heavy-work thread runs it."""

    names: list[str]  # presets
    style_data: list[bytes]  # uploaded styles
    blend: list[float]  # one weight per style, presets first
    strength: float
    preserve_color: bool
    max_side: int
    format: str | None


class InterpolateResponse(BaseModel):
    seed_a: int
    seed_b: int
    steps: int
    method: str
    label: int | None
    images: list[str]
    format: str
    width: int
    height: int
    model: str


def _heavy_work() -> HeavyWork:
    """Stylisation slots and memory budget sized from this machine (or the environment)."""
    return HeavyWork(
        slots=SETTINGS.stylize_slots or max(1, CPUS.count // 4),
        budget_bytes=SETTINGS.memory_budget_bytes or int(0.6 * available_memory()),
        bytes_per_pixel=STYLIZE_BYTES_PER_PIXEL,
        base_bytes=STYLIZE_BASE_BYTES,
        max_wait=SETTINGS.queue_seconds,
        metrics=QueueMetrics(),
    )


FP16_ROLES = ("generator", "stylizer")  # the models `make export` writes an fp16 variant of


@bentoml.service(
    name="atelier",
    workers=1,
    threads=REQUEST_THREADS,  # the cheap endpoints' thread pool; stylisations have their own threads
    traffic={"timeout": 120},  # in-flight limit: TrafficGuard below (its 429 carries Retry-After)
    http={"cors": {"enabled": False}},
)
class Atelier:
    def __init__(self) -> None:
        keep_large_blocks_returnable()
        log_request_ids("bentoml.access", "atelier")
        if (ignored := SETTINGS.describe_ignored()) is not None:
            logger.warning(ignored)
        self.exports = SETTINGS.exports
        # strict `cuda`: the GPU or refuse to start
        self.providers = providers_from_settings(SETTINGS)
        providers = self.providers.names
        self.manifest = load_manifest(self.exports)  # every file's sha256 verified
        self.watch = ExportWatch(self.exports, self.manifest)
        self.heavy = _heavy_work()
        # The threads the async endpoints (sample, sample_grid) run their model and encoding on, as
        # many as BentoML gives the sync ones; a stylisation they ask for waits in the heavy queue.
        self.cheap = anyio.CapacityLimiter(REQUEST_THREADS)
        models = self.manifest["models"]

        precision = SETTINGS.precision
        on_cuda = providers[0] == PROVIDER_NAMES["cuda"]
        # The style encoder (uploaded styles' statistics) is exported in fp32 only, whatever is asked.
        self.files = {
            role: choose_precision(role, entry, precision if role in FP16_ROLES else "fp32", on_cuda)
            for role, entry in models.items()
        }

        def session(role: str, **options: Any):
            return open_session(
                self.exports / self.files[role][0],
                providers,
                cuda_options=self.providers.cuda_options,
                threads=CPUS.count,
                **options,
            )

        def open_role(role: str):
            """The style sessions are created on a heavy-work thread: their thread pools inherit its low priority."""
            if role in ("style_encoder", "stylizer"):
                return self.heavy.on_heavy_thread(lambda: session(role, spinning=False))
            return session(role)

        self.sessions: dict[str, Any] = {role: open_role(role) for role in models}
        self.precision_fallback: dict[str, str] = {}
        self._build(models, session)
        # A variant's parity is measured at export on the CPU; each fp16 model is also run once here,
        # on the provider it will serve on, and must give finite numbers (the stylizer's fp16
        # variant gave NaN on every pixel on CUDA while the CPU provider scored it at 39 dB).
        for role in [r for r in FP16_ROLES if r in self.sessions and self.files[r][1] == "fp16"]:
            problem = self.heavy.on_heavy_thread(lambda role=role: self._not_finite(role))
            if problem is None:
                continue
            if precision == "fp16":
                raise ManifestError(f"ATELIER_PRECISION=fp16: {role}'s fp16 variant {problem}; use auto or fp32")
            logger.error("%s: its fp16 variant %s on %s; serving the fp32 model", role, problem, self.provider(role))
            self.precision_fallback[role] = problem
            self.files[role] = (models[role]["path"], "fp32")
            self.sessions[role] = open_role(role)
            self._build(models, session)
        self.device = device_name(self.provider(next(iter(self.sessions))) if self.sessions else "")
        export_provider_gauges(
            {role: self.provider(role) for role in self.sessions}, PROVIDER_NAMES[self.providers.spec.split(",")[0]]
        )
        self.warm_up()
        LIFECYCLE.install_sigterm(SETTINGS.drain_seconds, SETTINGS.shutdown_timeout)
        # Everything alive now (BentoML, pydantic, ONNX Runtime bindings, the models' metadata) lives
        # as long as the worker: out of the collector's sight, so that a full collection under load
        # scans only what requests allocate (measured: 67-127 ms pauses of the whole worker without).
        gc.collect()
        gc.freeze()
        self.ready = True
        logger.info(
            "ready on %s, thread pools sized to %d cores (%s): the playground is at /playground/, "
            "the API docs (Swagger UI) at /",
            ", ".join(sorted({f"{self.provider(r)} {self.files[r][1]}" for r in self.sessions})),
            CPUS.count,
            CPUS.source,
        )

    def _build(self, models: dict[str, Any], session: Any) -> None:
        """The GAN sampler and the style transfer over the current sessions."""
        self.gan = None
        if "generator" in models:
            self.gan = GanSampler(self.sessions["generator"], models["generator"], batching=SETTINGS.sample_batching)
        self.style = None
        if "stylizer" in models:
            large = None  # an arena-less session for large inputs: the CPU arena's concern only (style.py)
            if self.provider("stylizer") == PROVIDER_NAMES["cpu"]:
                large = self.heavy.on_heavy_thread(lambda: session("stylizer", arena=False, spinning=False))
            self.style = StyleTransfer(
                self.exports,
                self.manifest,
                self.sessions["style_encoder"],
                self.sessions["stylizer"],
                large,
                bucket=SETTINGS.shape_bucket,
            )

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
        self.warm_shapes: set[tuple[int, int]] = set()
        if self.style:
            for h, w in WARM_FIRST:  # the last one, 512x512, also the arena's high-water mark
                started = time.monotonic()
                self._warm_shape(h, w)
            self.heavy.seconds_per_pixel = (time.monotonic() - started) / (512 * 512)
            if self.style.step >= 64:
                later = [
                    hw for side in (512, 256) for hw in self.style.bucket_shapes(side) if hw not in self.warm_shapes
                ]
                threading.Thread(
                    target=self._warm_in_background, args=(later,), name="warm-shapes", daemon=True
                ).start()

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

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False) and not LIFECYCLE.draining

    def provider(self, role: str) -> str:
        return self.sessions[role].get_providers()[0]

    # --- GAN sampling -------------------------------------------------------------------------

    def _check_gan(self, label: int | None) -> Response | None:
        if self.gan is None:
            return error_response("model", "no generator in this export (run `make train export`)", 501)
        if label is not None:
            if not self.gan.num_classes:
                return error_response("label", "this generator is unconditional; leave label out")
            if label >= self.gan.num_classes:
                return error_response(
                    "label",
                    f"must be in 0..{self.gan.num_classes - 1} (classes: {', '.join(self.gan.labels)}), got {label}",
                )
        return None

    def _sample(self, n: int, seed: int | None, truncation: float, label: int | None):
        seed = secrets.randbelow(2**32) if seed is None else seed
        labels = [label] * n if label is not None else self.gan.default_labels(n)
        seeds, images = self.gan.sample(seed, n, truncation, labels)
        return seed, seeds, labels, images

    @bentoml.api
    async def sample(
        self,
        ctx: bentoml.Context,
        n: Annotated[int, Strict(), Ge(1), Le(MAX_SAMPLES)] = 1,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        label: Label | None = None,
        style_name: str | None = Field(
            default=None,
            description=f"preset(s) from /styles, comma-separated to blend: the samples come back painted, "
            f"enlarged to {SAMPLE_STYLE_SIDE} px",
        ),
        style: list[Path] = Field(
            default=None,
            description="style image(s) to paint the samples in (send the request as multipart/form-data); "
            "repeat to blend",
        ),
        weights: Weights = Field(default=None, description="blend weights, as for stylize"),
        strength: Strength = 1.0,
        format: Format = "png",
    ) -> SampleResponse:
        """Generate ``n`` images. The same seed (and truncation, label) gives the same images on every call.

        With a style (``style_name`` presets and/or ``style`` uploads, blended with ``weights``), each
        image is enlarged to 256 px (Lanczos) and stylised with ``strength``: the same images as
        ``stylize`` gives for the enlarged samples. Send JSON, or multipart/form-data to upload a style."""
        samples = await self._samples(ctx, n, seed, truncation, label, style_name, style, weights, strength)
        if isinstance(samples, Response):
            ctx.response.status_code = samples.status_code  # BentoML applies the context's status (see stylize)
            return samples
        seed, seeds, labels, images, described = samples
        encoded = await anyio.to_thread.run_sync(
            lambda: [_b64(encode_image(img, format)) for img in images], limiter=self.cheap
        )
        return SampleResponse(
            seed=seed,
            seeds=seeds,
            labels=labels,
            images=encoded,
            format=format,
            width=images[0].shape[1],
            height=images[0].shape[0],
            model=self._model_id("generator"),
            style=described,
        )

    @bentoml.api
    async def sample_grid(
        self,
        ctx: bentoml.Context,
        n: Annotated[int, Strict(), Ge(1), Le(MAX_SAMPLES)] = 16,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        label: Label | None = None,
        style_name: str | None = Field(default=None, description="preset(s) from /styles, as for sample"),
        style: list[Path] = Field(default=None, description="style image(s), as for sample (multipart/form-data)"),
        weights: Weights = Field(default=None, description="blend weights, as for stylize"),
        strength: Strength = 1.0,
        format: Format = "png",
    ) -> Annotated[Path, bentoml.validators.ContentType("image/*")]:
        """The same samples as ``sample``, tiled into one image (row-major, near-square); the seed is in
        X-Atelier-Seed, the style (when painted) in X-Atelier-Style."""
        samples = await self._samples(ctx, n, seed, truncation, label, style_name, style, weights, strength)
        if isinstance(samples, Response):
            ctx.response.status_code = samples.status_code  # BentoML applies the context's status (see stylize)
            return samples
        seed, _, _, images, described = samples
        grid = await anyio.to_thread.run_sync(
            lambda: encode_image(tile_grid(np.stack(images)), format), limiter=self.cheap
        )
        headers = {"X-Atelier-Seed": str(seed), **({"X-Atelier-Style": described} if described else {})}
        return Response(grid, media_type=FORMATS[format], headers=headers)

    async def _samples(
        self,
        ctx: bentoml.Context,
        n: int,
        seed: int | None,
        truncation: float,
        label: int | None,
        style_name: str | None,
        style: list[Path] | None,
        weights,
        strength: float,
    ) -> Response | tuple:
        """The generator's images (on the cheap endpoints' threads), stylised in the heavy queue when
        a style is given, and the style's description (None when unpainted); or the error response."""
        if (error := self._check_gan(label)) is not None:
            return error
        uploads = list(style or [])
        painted = style_name is not None or bool(uploads)
        if painted:
            request = self._style_request(style_name, uploads, weights)
            if isinstance(request, Response):
                return request
            names, blend = request
            try:
                style_data = await anyio.to_thread.run_sync(_read_styles, uploads)
            except ImageInputError as e:
                return error_response(e.field, e.message, e.status)
        elif weights is not None:
            return error_response("weights", "weights blend styles: give style_name and/or style too")
        seed, seeds, labels, images = await anyio.to_thread.run_sync(
            self._sample, n, seed, truncation, label, limiter=self.cheap
        )
        if not painted:
            return seed, seeds, labels, list(images), None

        def job() -> Response | tuple[list[np.ndarray], str]:
            try:
                chosen, described = self._style(names, style_data, blend)
            except ImageInputError as e:
                return error_response(e.field, e.message, e.status)
            return [
                self.style.stylize(_enlarged(image), chosen, strength, False, SAMPLE_STYLE_SIDE) for image in images
            ], described

        result = await self._queued(n * SAMPLE_STYLE_SIDE**2, job, ctx.request.is_disconnected)
        return result if isinstance(result, Response) else (seed, seeds, labels, *result)

    async def _queued(self, pixels: float, job, disconnected, memory: float | None = None) -> Any:
        """``job``'s result after its turn in the heavy-work queue, or the response that says why it
        did not run (429/503 with Retry-After, 499 when the client left)."""
        try:
            return await self.heavy.run(pixels, job, disconnected, memory=memory)
        except Overloaded as e:
            return error_response("service", e.message, e.status, headers={"Retry-After": str(e.retry_after)})
        except ClientGone:
            return error_response("service", "the client disconnected before the work started; nothing was run", 499)

    def _check_preset(self, name: str) -> Response | None:
        if self.style is None:
            return error_response("model", "no style model in this export (run `make train export`)", 501)
        if not re.fullmatch(PRESET_NAME, name) or name not in self.style.presets:
            return error_response(
                "style_name", f"unknown preset {name!r}; available: {', '.join(sorted(self.style.presets))}"
            )
        return None

    @bentoml.api
    def interpolate(
        self,
        seed_a: Seed,
        seed_b: Seed,
        steps: Annotated[int, Strict(), Ge(2), Le(MAX_STEPS)] = 8,
        method: Literal["slerp", "lerp"] = "slerp",
        truncation: Truncation = 1.0,
        label: Label | None = None,
        format: Format = "png",
    ) -> InterpolateResponse:
        """``steps`` images walking the latent space from seed_a's image to seed_b's (both ends included)."""
        if (error := self._check_gan(label)) is not None:
            return error
        if self.gan.num_classes and label is None:
            label = 0
        images = self.gan.interpolate(seed_a, seed_b, steps, method, truncation, label)
        return InterpolateResponse(
            seed_a=seed_a,
            seed_b=seed_b,
            steps=steps,
            method=method,
            label=label,
            images=[_b64(encode_image(img, format)) for img in images],
            format=format,
            width=images.shape[2],
            height=images.shape[1],
            model=self._model_id("generator"),
        )

    # --- style transfer ------------------------------------------------------------------------

    @bentoml.api
    async def stylize(
        self,
        ctx: bentoml.Context,
        content: Path = Field(
            description="the photo to repaint (png, jpeg, webp, gif, bmp, tiff; at most 20 MB, 40 MP), "
            "or an animated GIF or WebP (every frame repainted)"
        ),
        # Typed with a None default: BentoML 1.4.39 cannot build an optional file field
        # (`Path | None` is not read as a file, `Optional[Path]` fails with "unhashable FileSchema").
        style: list[Path] = Field(default=None, description="style image(s); repeat the field to blend several"),
        style_name: str | None = Field(default=None, description="preset(s) from /styles, comma-separated to blend"),
        weights: Weights = Field(
            default=None,
            description="blend weights, comma-separated: one per style, presets first "
            "(in style_name order), then uploads; default equal",
        ),
        strength: Strength = 1.0,
        preserve_color: Flag = False,
        max_side: Annotated[int, Strict(), Ge(64), Le(2048)] = 512,
        format: StyleFormat | None = Field(
            default=None,
            description="png, jpeg, webp or gif; default png, and for an animation the kind it came as "
            "(an animation comes back as gif or webp)",
        ),
    ) -> Annotated[Path, bentoml.validators.ContentType("image/*")]:
        """Repaint ``content`` in the style of presets and/or uploaded images (multipart/form-data).

        Several styles (``style_name=a,b`` and/or repeated ``style`` files) are blended by mixing
        their statistics with ``weights``. The output keeps the content's aspect ratio, its long
        side at most ``max_side``. An animated GIF or WebP comes back animated, every frame in the
        same style, frame timing and loop count kept (at most 300 frames and 16 megapixels of
        frames at the output size: 413 beyond). Stylisations queue briefly for a slot; when the
        queue is longer than the service allows, the answer is 429 with ``Retry-After``.
        """
        response = await self._stylize_queued(
            ctx.request.is_disconnected, content, style, style_name, weights, strength, preserve_color, max_side, format
        )
        ctx.response.status_code = response.status_code  # BentoML applies the context's status to the response
        return response

    async def _stylize_queued(
        self,
        disconnected,
        content: Path,
        style: list[Path] | None,
        style_name: str | None,
        weights,
        strength: float,
        preserve_color: bool,
        max_side: int,
        format: str | None,
    ) -> Response:
        """Check the request, wait for a stylisation slot, run ``_stylize`` there."""
        uploads = list(style or [])
        request = self._style_request(style_name, uploads, weights)
        if isinstance(request, Response):
            return request
        names, blend = request
        try:
            data, style_data, (width, height, frames) = await anyio.to_thread.run_sync(
                _read_and_check, content, uploads
            )
            out_size = fit_within(width, height, max_side)
            pixels = math.prod(out_size)  # the output's size: the queue's estimate
            memory = None
            if frames > 1:
                _check_animation(frames, (width, height), out_size, format)
                memory = self.heavy.memory(pixels) + ANIMATION_BYTES_PER_PIXEL * frames * pixels
                pixels *= frames
        except ImageInputError as e:
            return error_response(e.field, e.message, e.status)

        work = Stylisation(names, style_data, blend, strength, preserve_color, max_side, format)

        def job() -> Response:
            return (self._stylize_animation if frames > 1 else self._stylize)(data, work)

        return await self._queued(pixels, job, disconnected, memory=memory)

    def _style_request(
        self, style_name: str | None, uploads: list[Path], weights
    ) -> Response | tuple[list[str], list[float]]:
        """The presets named (``a,b``) and the blend weights for them and the uploads, or the error response."""
        if self.style is None:
            return error_response("model", "no style model in this export (run `make train export`)", 501)
        names = [n.strip() for n in style_name.split(",")] if style_name is not None else []
        if not names and not uploads:
            return error_response("style", "give a style: style (an image file) and/or style_name (a preset)")
        if len(names) + len(uploads) > MAX_STYLES:
            return error_response(
                "style", f"at most {MAX_STYLES} styles in one request, got {len(names) + len(uploads)}"
            )
        for name in names:
            if (error := self._check_preset(name)) is not None:
                return error
        try:
            return names, _blend_weights(weights, len(names) + len(uploads))
        except ImageInputError as e:
            return error_response(e.field, e.message, e.status)

    def _style(self, names: list[str], style_data: list[bytes], blend: list[float]) -> tuple[Any, str]:
        """The style to apply (a preset's name, its statistics already on the device, or the blend's
        statistics) and its description for X-Atelier-Style."""
        stats = [self.style.presets[name] for name in names]
        sources = [f"preset:{name}" for name in names]
        for upload in style_data:
            upload_stats, cached = self.style.uploaded_style_stats(
                upload, lambda d=upload: _decode(d, "style", max_side=self.style.style_side)
            )
            stats.append(upload_stats)
            sources.append("upload (cached statistics)" if cached else "upload")
        style = names[0] if len(names) == 1 and not style_data else mix_stats(stats, blend, self.style.cell)
        described = ", ".join(f"{src} x{w:.3g}" for src, w in zip(sources, blend)) if len(sources) > 1 else sources[0]
        return style, described

    def _stylize(self, data: bytes, work: Stylisation) -> Response:
        """The stylisation itself, on a heavy-work thread: decode, style statistics, the model, encode."""
        try:
            pixels = _decode(data, "content", max_side=work.max_side)
            style, described = self._style(work.names, work.style_data, work.blend)
        except ImageInputError as e:
            return error_response(e.field, e.message, e.status)
        image = self.style.stylize(pixels, style, work.strength, work.preserve_color, work.max_side)
        format = work.format or "png"
        return Response(
            encode_image(image, format),
            media_type=FORMATS[format],
            headers={"X-Atelier-Style": described, "X-Atelier-Size": f"{image.shape[1]}x{image.shape[0]}"},
        )

    def _stylize_animation(self, data: bytes, work: Stylisation) -> Response:
        """An animated GIF or WebP, on a heavy-work thread: every frame in the same style, one after
        another (batching frames measured no faster on the CPU: 4 frames of 320x240 in 715 ms as a
        batch, 700 ms one by one), encoded back with the file's frame durations and loop count."""
        try:
            animation = decode_animation(
                data,
                "content",
                max_pixels=IMAGE_LIMITS["max_pixels"],
                min_side=16,
                max_frames=ANIMATION_MAX_FRAMES,
                max_side=work.max_side,
            )
            style, described = self._style(work.names, work.style_data, work.blend)
        except ImageInputError as e:
            return error_response(e.field, e.message, e.status)
        frames = [
            self.style.stylize(frame, style, work.strength, work.preserve_color, work.max_side)
            for frame in animation.frames
        ]
        format = work.format or animation.format
        height, width = frames[0].shape[:2]
        return Response(
            encode_animation(frames, animation.durations, animation.loop, format),
            media_type=FORMATS[format],
            headers={
                "X-Atelier-Style": described,
                "X-Atelier-Size": f"{width}x{height}",
                "X-Atelier-Frames": str(len(frames)),
            },
        )

    @bentoml.api
    def styles(self) -> StylesResponse:
        """The style presets: name, where it came from (with its credit and licence for the bundled
        ones), and a JPEG thumbnail (base64)."""
        if self.style is None:
            return StylesResponse(styles=[])
        return StylesResponse(
            styles=[
                Preset(
                    name=name,
                    source=self.style.preset_sources[name],
                    credit=self.style.preset_credits[name],
                    thumbnail=_b64(thumb),
                )
                for name, thumb in self.style.thumbnails.items()
            ]
        )

    # --- information --------------------------------------------------------------------------

    def _model_id(self, role: str) -> str:
        return f"{role}@{self.manifest['models'][role]['sha256'][:12]}"

    @bentoml.api
    def info(self) -> dict[str, Any]:
        """Models, versions, checksums and the execution provider each session actually runs on.

        Paths are relative to the export folder (file names only): nothing about the host's layout."""
        models = {}
        for role, entry in self.manifest["models"].items():
            models[role] = {
                "path": entry["path"],
                "sha256": entry["sha256"],
                "opset": entry["opset"],
                "inputs": entry["inputs"],
                "outputs": entry["outputs"],
                "parity": entry["parity"],
                "provider": self.provider(role),
                "precision": self.files[role][1],  # fp16: the export's variant, entry["variants"]["fp16"]
                **({"precision_fallback": self.precision_fallback[role]} if role in self.precision_fallback else {}),
                "variants": entry.get("variants", {}),
            }
        if "generator" in models:
            g = self.manifest["models"]["generator"]
            models["generator"].update(
                {
                    "latent_dim": g["latent_dim"],
                    "image_size": g["image_size"],
                    "channels": g["channels"],
                    "class_labels": g["class_labels"],
                    "dataset": g["dataset"],
                    "metrics": _finite(g.get("metrics")),
                    "latent": g["latent"],
                    "batching": (
                        {"enabled": True, "runs": self.gan.batcher.runs, "calls": self.gan.batcher.calls}
                        if self.gan.batcher
                        else {"enabled": False}
                    ),
                }
            )
        if "stylizer" in models:
            st = self.manifest["style"]
            vgg = {**st["vgg"], "weights": st["vgg"]["weights"] and Path(st["vgg"]["weights"].split("#")[0]).name}
            models["style_encoder"].update({"vgg": vgg, "levels": st["levels"]})
            models["stylizer"].update(
                {
                    "levels": st["levels"],
                    "transform": st["transform"],
                    # where the style's own patches are swapped in and their detail added (None: off)
                    "patches": {k: st["patches"][k] for k in ("scale", "cell", "detail_gain")}
                    if "patches" in st
                    else None,
                    "training": {"metrics": _finite(st.get("metrics"))},
                    "quality": _finite(st.get("quality")),
                    "presets": [p["name"] for p in st["presets"]],
                    "shape_step": self.style.step,  # inputs padded to multiples of this
                    "warm_shapes": sorted(f"{h}x{w}" for h, w in self.warm_shapes),
                }
            )
        return {
            "service": "atelier",
            "version": self.manifest["atelier_version"],
            "manifest_version": self.manifest["version"],
            "exported": self.manifest["created"],
            "exports": self.exports.name,  # the folder's name: info never shows host paths
            "device": self.device,
            "providers": {
                "requested": self.providers.spec,
                "fallback": self.providers.fallback,
                "cuda_options": self.providers.cuda_options,
            },
            "cpus": {"count": CPUS.count, "source": CPUS.source, "request_threads": REQUEST_THREADS},
            "models": models,
            "export_check": self.watch.check(),
            "stylize_queue": self.heavy.describe() if self.style else None,
        }


def _blend_weights(weights: Weights, count: int) -> list[float]:
    """The blend weights of ``count`` styles, normalised to sum 1 (equal when none are given)."""
    if weights is None:
        return [1.0 / count] * count
    if isinstance(weights, str):
        try:
            values = [float(v) for v in weights.split(",")]
        except ValueError:
            raise ImageInputError("weights", f"comma-separated numbers expected, got {weights!r}") from None
    else:
        values = [float(v) for v in (weights if isinstance(weights, list) else [weights])]
    if len(values) != count:
        raise ImageInputError(
            "weights", f"{len(values)} weights for {count} style(s): one per style, presets first, then uploads"
        )
    if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise ImageInputError("weights", f"weights must be finite, >= 0 and not all 0, got {values}")
    total = sum(values)
    return [v / total for v in values]


def _upload_bytes(path: Path, field: str) -> bytes:
    """An uploaded file's bytes, its size checked before reading."""
    size = path.stat().st_size
    if size > UPLOAD_LIMIT:
        raise ImageInputError(field, f"file is {size / 2**20:.1f} MB; the limit is {UPLOAD_LIMIT // 2**20} MB")
    return path.read_bytes()


def _read_styles(styles: list[Path]) -> list[bytes]:
    """Uploaded styles' bytes, each header checked (a bad file is refused before it queues)."""
    style_data = [_upload_bytes(path, "style") for path in styles]
    for upload in style_data:
        check_header(upload, "style", **IMAGE_LIMITS)
    return style_data


def _read_and_check(content: Path, styles: list[Path]) -> tuple[bytes, list[bytes], tuple[int, int, int]]:
    """The uploads' bytes, each header checked; the content's (width, height, frames)."""
    data = _upload_bytes(content, "content")
    size = read_header(data, "content", **IMAGE_LIMITS, max_frames=ANIMATION_MAX_FRAMES)
    return data, _read_styles(styles), size


def _enlarged(image: np.ndarray) -> np.ndarray:
    """A generated image (H, W, 1 or 3) uint8 as RGB, enlarged to long side ``SAMPLE_STYLE_SIDE`` (Lanczos)."""
    return resize_long_side(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image, SAMPLE_STYLE_SIDE)


def _check_animation(frames: int, size: tuple[int, int], out_size: tuple[int, int], format: str | None) -> None:
    """An animation's limits, from its header: 413 for more frames x pixels than one request takes."""
    if format in ("png", "jpeg"):
        raise ImageInputError(
            "format", f"an animation comes back as gif or webp, not {format} (leave format out for the kind it came as)"
        )
    work = frames * math.prod(out_size)
    if work > ANIMATION_MAX_MEGAPIXELS * 1_000_000:
        raise ImageInputError(
            "content",
            f"{frames} frames of {out_size[0]}x{out_size[1]} are {work / 1e6:.1f} "
            f"megapixels to repaint; the limit is {ANIMATION_MAX_MEGAPIXELS} "
            "(send fewer frames or a lower max_side)",
            status=413,
        )
    decoded = frames * math.prod(size)
    if decoded > ANIMATION_MAX_DECODE_MEGAPIXELS * 1_000_000:
        raise ImageInputError(
            "content",
            f"{frames} frames of {size[0]}x{size[1]} are {decoded / 1e6:.0f} megapixels "
            f"to decode; the limit is {ANIMATION_MAX_DECODE_MEGAPIXELS} "
            "(send fewer frames or smaller ones)",
            status=413,
        )


def _decode(data: bytes, field: str, max_side: int | None = None) -> np.ndarray:
    """Every limit checked: dimensions from the header before any pixel is decoded; a large image
    is decoded straight to long side ``max_side``."""
    return decode_image(data, field, **IMAGE_LIMITS, max_side=max_side)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _finite(obj: Any) -> Any:
    """JSON has no NaN: unmeasured metrics become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


API_PATHS = [f"/{name}" for name in Atelier.apis]
# What the schemas alone cannot say, added to the operations' descriptions in the OpenAPI document.
API_NOTES = {
    "/stylize": "Give a style: `style` (one or more image files) and/or `style_name` (presets); "
    "a request with neither is refused with 400.",
    "/sample": "Send JSON, or a multipart form to upload `style` images.",
    "/sample_grid": "Send JSON, or a multipart form to upload `style` images.",
}


def _export_fields() -> dict[str, dict[str, dict[str, Any]]]:
    """What this export allows, for the OpenAPI document: its presets' names and its labels."""
    try:
        manifest = json.loads((SETTINGS.exports / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    presets = "|".join(re.escape(p["name"]) for p in manifest.get("style", {}).get("presets", []))
    labels = manifest["models"].get("generator", {}).get("class_labels") or []
    number = r"\s*\d+(\.\d*)?\s*"
    fields: dict[str, dict[str, Any]] = {"weights": {"pattern": f"^{number}(,{number}){{0,{MAX_STYLES - 1}}}$"}}
    if presets:
        fields["style_name"] = {"pattern": f"^({presets})(,({presets})){{0,{MAX_STYLES - 1}}}$"}
    if labels:
        fields["label"] = {"maximum": len(labels) - 1}
    return {path: fields for path in ("/sample", "/sample_grid", "/interpolate", "/stylize")}


def _openapi() -> dict[str, Any]:
    return openapi_document(
        Atelier.openapi_spec.asdict(),
        version=__version__,
        api_paths=API_PATHS,
        keys=bool(SETTINGS.api_keys),
        metrics_need_key=SETTINGS.metrics_need_key,
        notes=API_NOTES,
        fields=_export_fields(),
        one_of_fields={"/stylize": ["style", "style_name"]},
        optional_body=("/styles", "/info"),
    )


# ASGI middleware, outermost first: the request id (on every response and error), the API's own
# document and page, keys and rate limits, requests in flight, then the body's checks and admission.
Atelier.add_asgi_middleware(RequestIds)
Atelier.add_asgi_middleware(ApiDocs, make_document=_openapi)
Atelier.add_asgi_middleware(
    KeyGuard,
    keys=SETTINGS.api_keys,
    guarded_paths=[*API_PATHS, *(["/metrics"] if SETTINGS.metrics_need_key else [])],
    rate_limit_per_minute=SETTINGS.rate_limit_per_minute,
)
# The playground: a static page (service/playground) calling the API above, on the same port.
Atelier.mount_asgi_app(StaticFiles(directory=PLAYGROUND, html=True), path="/playground", name="playground")
Atelier.add_asgi_middleware(
    TrafficGuard,
    api_paths=API_PATHS,
    max_in_flight=MAX_IN_FLIGHT,
    queued_paths=("/stylize",),
)
Atelier.add_asgi_middleware(
    BodyGuard,
    limits={
        **{f"/{name}": JSON_BODY_LIMIT for name in ("sample", "sample_grid", "interpolate", "styles", "info")},
        "/stylize": FORM_BODY_LIMIT,
    },
    form_limits={"/sample": FORM_BODY_LIMIT, "/sample_grid": FORM_BODY_LIMIT},
    fields={f"/{name}": list(api.input_spec.model_fields) for name, api in Atelier.apis.items()},
    files={f"/{name}": list(api.input_spec.multipart_fields) for name, api in Atelier.apis.items()},
    may_be_empty=("/styles", "/info"),
    budget=UploadBudget(SETTINGS.upload_budget_bytes),
)
