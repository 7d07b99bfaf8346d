"""The stylisation flow: a request's styles checked and resolved (presets, uploads, blends), its
turn in the heavy-work queue, the photo (or every frame of an animation, or generated samples)
repainted there, the answer encoded. Endpoints call ``Painter``; it raises ``ApiError``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.responses import Response

from service.admission import ClientGone, HeavyWork, Overloaded
from service.animation import decode_animation, encode_animation
from service.api import (
    ANIMATION_BYTES_PER_PIXEL,
    ANIMATION_MAX_FRAMES,
    IMAGE_LIMITS,
    SAMPLE_STYLE_SIDE,
    StyleChoice,
    Stylisation,
    Weights,
)
from service.errors import ApiError
from service.images import FORMATS, encode_image, fit_within
from service.style import StyleTransfer, mix_stats, resize_long_side
from service.uploads import blend_weights, check_animation, decode, preset_names, read_content, read_styles

Disconnected = Callable[[], Awaitable[bool]]
NO_STYLE_MODEL = "no style model in this export (run `make train export`)"


class Painter:
    def __init__(self, style: StyleTransfer | None, heavy: HeavyWork):
        self.style, self.heavy = style, heavy

    def transfer(self) -> StyleTransfer:
        if self.style is None:
            raise ApiError("model", NO_STYLE_MODEL, 501)
        return self.style

    def check(self, style_name: str | None, uploads: int, weights: Weights) -> tuple[list[str], list[float]]:
        """The presets a request names and one weight per style, checked before any file is read."""
        names = preset_names(style_name, uploads, self.transfer().presets)
        return names, blend_weights(weights, len(names) + uploads)

    async def choice(self, style_name: str | None, uploads: list[Path] | None, weights: Weights) -> StyleChoice:
        """The styles a request names, checked; the uploads read and their headers checked."""
        uploads = list(uploads or [])
        names, blend = self.check(style_name, len(uploads), weights)
        return StyleChoice(names, await anyio.to_thread.run_sync(read_styles, uploads), blend)

    def resolve(self, choice: StyleChoice) -> tuple[Any, str]:
        """The style to apply (a preset's name, its statistics already on the device, or the blend's
        statistics) and its description for X-Atelier-Style. On a heavy-work thread: it decodes."""
        style = self.transfer()
        stats = [style.presets[name] for name in choice.names]
        sources = [f"preset:{name}" for name in choice.names]
        for upload in choice.uploads:
            upload_stats, cached = style.uploaded_style_stats(
                upload, lambda d=upload: decode(d, "style", max_side=style.style_side)
            )
            stats.append(upload_stats)
            sources.append("upload (cached statistics)" if cached else "upload")
        single = len(choice.names) == 1 and not choice.uploads
        chosen = choice.names[0] if single else mix_stats(stats, choice.blend, style.cell)
        blend = zip(sources, choice.blend)
        described = ", ".join(f"{src} x{w:.3g}" for src, w in blend) if len(sources) > 1 else sources[0]
        return chosen, described

    async def queued(self, pixels: float, job: Callable[[], Any], disconnected: Disconnected, memory=None) -> Any:
        """``job``'s result after its turn in the heavy-work queue; ``ApiError`` for why it did not
        run (429/503 with Retry-After, 499 when the client left)."""
        try:
            return await self.heavy.run(pixels, job, disconnected, memory=memory)
        except Overloaded as e:
            raise ApiError("service", e.message, e.status, {"Retry-After": str(e.retry_after)}) from None
        except ClientGone:
            raise ApiError("service", "the client disconnected before the work started; nothing was run", 499) from None

    async def stylize(
        self, content: Path, uploads: list[Path] | None, work: Stylisation, disconnected: Disconnected
    ) -> Response:
        """Read and check the photo, then the styles; wait for a slot, repaint the photo (or each
        frame) there, encode the answer. ``work.style`` holds the checked names and weights."""
        data, (width, height, frames) = await anyio.to_thread.run_sync(read_content, content)
        style_data = await anyio.to_thread.run_sync(read_styles, list(uploads or []))
        work = replace(work, style=replace(work.style, uploads=style_data))
        out_size = fit_within(width, height, work.max_side)
        pixels = math.prod(out_size)  # the output's size: the queue's estimate
        memory = None
        if frames > 1:
            check_animation(frames, (width, height), out_size, work.format)
            memory = self.heavy.memory(pixels) + ANIMATION_BYTES_PER_PIXEL * frames * pixels
            pixels *= frames
        job = self._animation if frames > 1 else self._photo
        return await self.queued(pixels, lambda: job(data, work), disconnected, memory=memory)

    def _photo(self, data: bytes, work: Stylisation) -> Response:
        """On a heavy-work thread: decode, the style, the model, encode."""
        pixels = decode(data, "content", max_side=work.max_side)
        style, described = self.resolve(work.style)
        image = self.transfer().stylize(pixels, style, work.strength, work.preserve_color, work.max_side)
        format = work.format or "png"
        return Response(
            encode_image(image, format),
            media_type=FORMATS[format],
            headers={"X-Atelier-Style": described, "X-Atelier-Size": f"{image.shape[1]}x{image.shape[0]}"},
        )

    def _animation(self, data: bytes, work: Stylisation) -> Response:
        """On a heavy-work thread: every frame in the same style, one after another (batching frames
        measured no faster on the CPU), encoded back with the file's frame durations and loop count."""
        animation = decode_animation(
            data,
            "content",
            max_pixels=IMAGE_LIMITS["max_pixels"],
            min_side=16,
            max_frames=ANIMATION_MAX_FRAMES,
            max_side=work.max_side,
        )
        style, described = self.resolve(work.style)
        st = self.transfer()
        frames = [st.stylize(f, style, work.strength, work.preserve_color, work.max_side) for f in animation.frames]
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

    async def samples(
        self, images: list[np.ndarray], choice: StyleChoice, strength: float | None, disconnected: Disconnected
    ) -> tuple[list[np.ndarray], str]:
        """Generated images enlarged to ``SAMPLE_STYLE_SIDE`` and painted in the heavy queue: the same
        pictures ``stylize`` gives for the enlarged samples, and the style's description."""

        def job() -> tuple[list[np.ndarray], str]:
            style, described = self.resolve(choice)
            st = self.transfer()
            return [st.stylize(_enlarged(im), style, strength, False, SAMPLE_STYLE_SIDE) for im in images], described

        return await self.queued(len(images) * SAMPLE_STYLE_SIDE**2, job, disconnected)


def _enlarged(image: np.ndarray) -> np.ndarray:
    """A generated image (H, W, 1 or 3) uint8 as RGB, enlarged to long side ``SAMPLE_STYLE_SIDE`` (Lanczos)."""
    return resize_long_side(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image, SAMPLE_STYLE_SIDE)
