"""Atelier's HTTP service: BentoML on ONNX Runtime. ``bentoml serve`` (see bentofile.yaml).

The endpoints, each a few lines: the models come from ``startup.Models``, the stylisation flow
from ``painting.Painter``, the fields' types and limits from ``api``, the middleware from
``http``. Configuration: the ``ATELIER_*`` environment variables, read once by ``settings``.
Every refusal is an ``ApiError``, answered by ``answers_api_errors``.
"""

from __future__ import annotations

import base64
import gc
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import bentoml
import numpy as np
from pydantic import Field
from starlette.responses import Response

from service import http
from service.admission import HeavyWork
from service.api import (
    SAMPLE_STYLE_SIDE,
    STYLIZE_BASE_BYTES,
    STYLIZE_BYTES_PER_PIXEL,
    Count,
    Flag,
    Format,
    InterpolateResponse,
    Label,
    MaxSide,
    Preset,
    SampleResponse,
    Seed,
    Steps,
    Strength,
    StyleChoice,
    StyleFormat,
    StylesResponse,
    Stylisation,
    Truncation,
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

# Typed with a None default: BentoML 1.4.39 cannot build an optional file field
# (`Path | None` is not read as a file, `Optional[Path]` fails with "unhashable FileSchema").
StyleFiles = list[Path]
STYLE_NAME = "preset(s) from /styles, comma-separated to blend"
WEIGHTS = "blend weights, comma-separated: one per style, presets first (in style_name order), then uploads"


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
        self, ctx, n: int, seed: int | None, truncation: float, label: int | None, style_name, style, weights, strength
    ) -> tuple[int, list[int], list[int], list[np.ndarray], str | None]:
        """(seed, seeds, labels, images, the style's description or None): the generator's images,
        on the cheap endpoints' threads, painted in the heavy queue when a style is given."""
        gan = self._generator(label)
        painted = style_name is not None or bool(style)
        choice: StyleChoice | None = await self.painter.choice(style_name, style, weights) if painted else None
        if not painted and weights is not None:
            raise ApiError("weights", "weights blend styles: give style_name and/or style too")
        seed = secrets.randbelow(2**32) if seed is None else seed
        labels = [label] * n if label is not None else gan.default_labels(n)
        seeds, images = await anyio.to_thread.run_sync(gan.sample, seed, n, truncation, labels, limiter=self.cheap)
        if choice is None:
            return seed, seeds, labels, list(images), None
        painted_images, described = await self.painter.samples(
            list(images), choice, strength, ctx.request.is_disconnected
        )
        return seed, seeds, labels, painted_images, described

    @bentoml.api
    @answers_api_errors
    async def sample(
        self,
        ctx: bentoml.Context,
        n: Count = 1,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        label: Label | None = None,
        style_name: str | None = Field(
            default=None, description=f"{STYLE_NAME}: the samples come back painted, enlarged to {SAMPLE_STYLE_SIDE} px"
        ),
        style: StyleFiles = Field(
            default=None, description="style image(s) to paint the samples in (multipart/form-data); repeat to blend"
        ),
        weights: Weights = Field(default=None, description=WEIGHTS),
        strength: Strength = 1.0,
        format: Format = "png",
    ) -> SampleResponse:
        """Generate ``n`` images. The same seed (and truncation, label) gives the same images on every call.

        With a style (``style_name`` presets and/or ``style`` uploads, blended with ``weights``), each
        image is enlarged to 256 px (Lanczos) and stylised with ``strength``: the same images as
        ``stylize`` gives for the enlarged samples. Send JSON, or multipart/form-data to upload a style."""
        seed, seeds, labels, images, described = await self._samples(
            ctx, n, seed, truncation, label, style_name, style, weights, strength
        )
        encoded = await anyio.to_thread.run_sync(
            lambda: [_b64(encode_image(img, format)) for img in images], limiter=self.cheap
        )
        height, width = images[0].shape[:2]
        return SampleResponse(
            seed=seed,
            seeds=seeds,
            labels=labels,
            images=encoded,
            format=format,
            width=width,
            height=height,
            model=self.models.model_id("generator"),
            style=described,
        )

    @bentoml.api
    @answers_api_errors
    async def sample_grid(
        self,
        ctx: bentoml.Context,
        n: Count = 16,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        label: Label | None = None,
        style_name: str | None = Field(default=None, description="preset(s) from /styles, as for sample"),
        style: StyleFiles = Field(default=None, description="style image(s), as for sample (multipart/form-data)"),
        weights: Weights = Field(default=None, description=WEIGHTS),
        strength: Strength = 1.0,
        format: Format = "png",
    ) -> Annotated[Path, bentoml.validators.ContentType("image/*")]:
        """The same samples as ``sample``, tiled into one image (row-major, near-square); the seed is in
        X-Atelier-Seed, the style (when painted) in X-Atelier-Style."""
        seed, _, _, images, described = await self._samples(
            ctx, n, seed, truncation, label, style_name, style, weights, strength
        )
        grid = await anyio.to_thread.run_sync(
            lambda: encode_image(tile_grid(np.stack(images)), format), limiter=self.cheap
        )
        headers = {"X-Atelier-Seed": str(seed), **({"X-Atelier-Style": described} if described else {})}
        return Response(grid, media_type=FORMATS[format], headers=headers)

    @bentoml.api
    @answers_api_errors
    def interpolate(
        self,
        seed_a: Seed,
        seed_b: Seed,
        steps: Steps = 8,
        method: Literal["slerp", "lerp"] = "slerp",
        truncation: Truncation = 1.0,
        label: Label | None = None,
        format: Format = "png",
    ) -> InterpolateResponse:
        """``steps`` images walking the latent space from seed_a's image to seed_b's (both ends included)."""
        gan = self._generator(label)
        if gan.num_classes and label is None:
            label = 0
        images = gan.interpolate(seed_a, seed_b, steps, method, truncation, label)
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
        strength: Strength = 1.0,
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
