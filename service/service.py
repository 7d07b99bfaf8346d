"""Atelier's HTTP service: BentoML on ONNX Runtime. ``bentoml serve`` (see bentofile.yaml).

The endpoints, each a few lines: the models come from ``startup.Models``, the stylisation flow
from ``painting.Painter``, the fields' types and limits (and the GAN endpoints' request models)
from ``api``, the middleware from ``http``. Configuration: the ``ATELIER_*`` environment
variables, read once by ``settings``. Every refusal is an ``ApiError``, answered by
``answers_api_errors``.
"""

from __future__ import annotations

import base64
import gc
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import bentoml
import numpy as np
from pydantic import Field
from starlette.responses import Response

from service import http
from service.admission import HeavyWork
from service.api import (
    STRENGTH,
    STYLE_NAME,
    STYLIZE_BASE_BYTES,
    STYLIZE_BYTES_PER_PIXEL,
    WEIGHTS,
    Flag,
    InterpolateRequest,
    InterpolateResponse,
    MaxSide,
    Preset,
    SampleGridRequest,
    SampleRequest,
    SampleResponse,
    Strength,
    StyleChoice,
    StyleFiles,
    StyleFormat,
    StylesResponse,
    Stylisation,
    Weights,
)
from service.errors import ApiError, answers_api_errors
from service.gan import GanSampler
from service.images import FORMATS, encode_image, tile_grid
from service.info import describe
from service.lifecycle import LIFECYCLE
from service.metrics import QueueMetrics
from service.painting import Painter
from service.request_id import log_request_ids
from service.runtime import available_memory, cpu_budget, keep_large_blocks_returnable
from service.settings import Settings
from service.startup import Models

SETTINGS = Settings.from_environment()  # a bad value refuses to start, naming the variable
CPUS = cpu_budget(SETTINGS.cpus)
REQUEST_THREADS = max(4, 2 * CPUS.count)  # threads for the cheap endpoints (BentoML's pool, and sample's)
logger = logging.getLogger("atelier")
logger.setLevel(logging.INFO)  # our start-up line beside BentoML's (the root logger stays at its level)


def heavy_work() -> HeavyWork:
    """Stylisation slots and memory budget sized from this machine (or the settings)."""
    return HeavyWork(
        slots=SETTINGS.stylize_slots or max(1, CPUS.count // 4),
        budget_bytes=SETTINGS.memory_budget_bytes or int(0.6 * available_memory()),
        bytes_per_pixel=STYLIZE_BYTES_PER_PIXEL,
        base_bytes=STYLIZE_BASE_BYTES,
        max_wait=SETTINGS.queue_seconds,
        metrics=QueueMetrics(),
    )


@bentoml.service(
    name="atelier",
    workers=1,
    threads=REQUEST_THREADS,  # the cheap endpoints' thread pool; stylisations have their own threads
    traffic={"timeout": 120},  # in-flight limit: TrafficGuard (its 429 carries Retry-After)
    http={"cors": {"enabled": False}},
)
class Atelier:
    def __init__(self) -> None:
        keep_large_blocks_returnable()
        log_request_ids("bentoml.access", "atelier")
        if (ignored := SETTINGS.describe_ignored()) is not None:
            logger.warning(ignored)
        self.heavy = heavy_work()
        self.models = Models(SETTINGS, CPUS, self.heavy)
        self.painter = Painter(self.models.style, self.heavy)
        # The threads the async endpoints (sample, sample_grid) run their model and encoding on, as
        # many as BentoML gives the sync ones; a stylisation they ask for waits in the heavy queue.
        self.cheap = anyio.CapacityLimiter(REQUEST_THREADS)
        self.models.warm_up()
        LIFECYCLE.install_sigterm(SETTINGS.drain_seconds, SETTINGS.shutdown_timeout)
        # Everything alive now lives as long as the worker: out of the collector's sight, so that a
        # full collection under load scans only what requests allocate (docs/performance.md).
        gc.collect()
        gc.freeze()
        self.ready = True
        m = self.models
        logger.info(
            "ready on %s, thread pools sized to %d cores (%s): the playground is at /playground/, "
            "the API docs (Swagger UI) at /",
            ", ".join(sorted({f"{m.provider(r)} {m.files[r][1]}" for r in m.sessions})),
            CPUS.count,
            CPUS.source,
        )

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False) and not LIFECYCLE.draining

    # --- GAN sampling -------------------------------------------------------------------------

    def _generator(self, label: int | None) -> GanSampler:
        gan = self.models.gan
        if gan is None:
            raise ApiError("model", "no generator in this export (run `make train export`)", 501)
        if label is not None and not gan.num_classes:
            raise ApiError("label", "this generator is unconditional; leave label out")
        if label is not None and label >= gan.num_classes:
            classes = ", ".join(gan.labels)
            raise ApiError("label", f"must be in 0..{gan.num_classes - 1} (classes: {classes}), got {label}")
        return gan

    async def _samples(
        self, ctx: bentoml.Context, r: SampleRequest
    ) -> tuple[int, list[int], list[int], list[np.ndarray], str | None]:
        """(seed, seeds, labels, images, the style's description or None): the generator's images,
        on the cheap endpoints' threads, painted in the heavy queue when a style is given."""
        gan = self._generator(r.label)
        painted = r.style_name is not None or bool(r.style)
        choice: StyleChoice | None = await self.painter.choice(r.style_name, r.style, r.weights) if painted else None
        if not painted and r.weights is not None:
            raise ApiError("weights", "weights blend styles: give style_name and/or style too")
        seed = secrets.randbelow(2**32) if r.seed is None else r.seed
        labels = [r.label] * r.n if r.label is not None else gan.default_labels(r.n)
        seeds, images = await anyio.to_thread.run_sync(gan.sample, seed, r.n, r.truncation, labels, limiter=self.cheap)
        if choice is None:
            return seed, seeds, labels, list(images), None
        painted_images, described = await self.painter.samples(
            list(images), choice, r.strength, ctx.request.is_disconnected
        )
        return seed, seeds, labels, painted_images, described

    # The GAN endpoints' bodies are their `input_spec` models (service/api.py). BentoML validates the
    # body into the model and calls the endpoint with its fields as keyword arguments: the endpoint
    # takes them back as the model (model_construct: checked already, not validated again).

    @bentoml.api(input_spec=SampleRequest)
    @answers_api_errors
    async def sample(self, ctx: bentoml.Context, **fields: Any) -> SampleResponse:
        """Generate ``n`` images. The same seed (and truncation, label) gives the same images on every call.

        With a style (``style_name`` presets and/or ``style`` uploads, blended with ``weights``), each
        image is enlarged to 256 px (Lanczos) and stylised with ``strength``: the same images as
        ``stylize`` gives for the enlarged samples. Send JSON, or multipart/form-data to upload a style."""
        r = SampleRequest.model_construct(**fields)
        seed, seeds, labels, images, described = await self._samples(ctx, r)
        encoded = await anyio.to_thread.run_sync(
            lambda: [_b64(encode_image(img, r.format)) for img in images], limiter=self.cheap
        )
        height, width = images[0].shape[:2]
        return SampleResponse(
            seed=seed,
            seeds=seeds,
            labels=labels,
            images=encoded,
            format=r.format,
            width=width,
            height=height,
            model=self.models.model_id("generator"),
            style=described,
        )

    @bentoml.api(input_spec=SampleGridRequest)
    @answers_api_errors
    async def sample_grid(
        self, ctx: bentoml.Context, **fields: Any
    ) -> Annotated[Path, bentoml.validators.ContentType("image/*")]:
        """The same samples as ``sample``, tiled into one image (row-major, near-square); the seed is in
        X-Atelier-Seed, the style (when painted) in X-Atelier-Style."""
        r = SampleGridRequest.model_construct(**fields)
        seed, _, _, images, described = await self._samples(ctx, r)
        grid = await anyio.to_thread.run_sync(
            lambda: encode_image(tile_grid(np.stack(images)), r.format), limiter=self.cheap
        )
        headers = {"X-Atelier-Seed": str(seed), **({"X-Atelier-Style": described} if described else {})}
        return Response(grid, media_type=FORMATS[r.format], headers=headers)

    @bentoml.api(input_spec=InterpolateRequest)
    @answers_api_errors
    def interpolate(self, **fields: Any) -> InterpolateResponse:
        """``steps`` images walking the latent space from seed_a's image to seed_b's (both ends included)."""
        r = InterpolateRequest.model_construct(**fields)
        gan = self._generator(r.label)
        label = 0 if gan.num_classes and r.label is None else r.label
        images = gan.interpolate(r.seed_a, r.seed_b, r.steps, r.method, r.truncation, label)
        return InterpolateResponse(
            seed_a=r.seed_a,
            seed_b=r.seed_b,
            steps=r.steps,
            method=r.method,
            label=label,
            images=[_b64(encode_image(img, r.format)) for img in images],
            format=r.format,
            width=images.shape[2],
            height=images.shape[1],
            model=self.models.model_id("generator"),
        )

    # --- style transfer ------------------------------------------------------------------------

    @bentoml.api
    @answers_api_errors
    async def stylize(
        self,
        ctx: bentoml.Context,
        content: Path = Field(
            description="the photo to repaint (png, jpeg, webp, gif, bmp, tiff; at most 20 MB, 40 MP), "
            "or an animated GIF or WebP (every frame repainted)"
        ),
        style: StyleFiles = Field(default=None, description="style image(s); repeat the field to blend several"),
        style_name: str | None = Field(default=None, description=STYLE_NAME),
        weights: Weights = Field(default=None, description=f"{WEIGHTS}; default equal"),
        strength: Strength | None = Field(default=None, description=STRENGTH),
        preserve_color: Flag = False,
        max_side: MaxSide = 512,
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
        uploads = list(style or [])
        names, blend = self.painter.check(style_name, len(uploads), weights)
        work = Stylisation(StyleChoice(names, [], blend), strength, preserve_color, max_side, format)
        response = await self.painter.stylize(content, uploads, work, ctx.request.is_disconnected)
        ctx.response.status_code = response.status_code  # BentoML applies the context's status to the response
        return response

    @bentoml.api
    def styles(self) -> StylesResponse:
        """The style presets: name, where it came from (with its credit and licence for the bundled
        ones), and a JPEG thumbnail (base64)."""
        st = self.models.style
        if st is None:
            return StylesResponse(styles=[])
        return StylesResponse(
            styles=[
                Preset(name=name, source=st.preset_sources[name], credit=st.preset_credits[name], thumbnail=_b64(thumb))
                for name, thumb in st.thumbnails.items()
            ]
        )

    @bentoml.api
    def info(self) -> dict[str, Any]:
        """Models, versions, checksums and the execution provider each session actually runs on.

        Paths are relative to the export folder (file names only): nothing about the host's layout."""
        return describe(self.models, REQUEST_THREADS)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


http.install(Atelier, SETTINGS)
