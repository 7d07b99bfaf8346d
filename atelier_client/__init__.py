"""A Python client for Atelier's HTTP API (httpx and Pillow; no torch, no BentoML needed).

    from atelier_client import Atelier

    with Atelier("http://localhost:3000") as atelier:
        digits = atelier.sample(n=4, seed=42)                  # list of PIL images; .info["seed"] each
        painted = atelier.stylize("photo.jpg", style_name="wheat_field", strength=0.8)
        painted.save("painted.png")

A service with API keys wants one: ``Atelier(url, api_key=...)``, or ``$ATELIER_API_KEY``.

Every error the API answers is raised as ``AtelierError`` with its HTTP status, the field it names,
its message and the request's id. Only ``429`` and ``503`` (busy, draining) are retried, waiting
what ``Retry-After`` says plus up to half as much again at random, so that clients turned away
together do not return together (``retries`` times, at most ``max_retry_wait`` seconds each);
connection failures are retried with exponential back-off, jittered the same way. Every other
error (a bad request, a missing or wrong key, a model the export does not have) is final.
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import httpx
from PIL import Image

__all__ = ["Atelier", "AtelierError", "ImageInput", "Info", "ModelInfo", "Preset", "__version__"]

try:
    __version__ = version("atelier-client")
except PackageNotFoundError:  # run from a checkout without installing
    __version__ = "0.1.0"

ImageInput = str | Path | bytes | Image.Image  # a file path, a file's bytes, or a PIL image
Format = Literal["png", "jpeg", "webp"]
RETRY_STATUSES = (429, 503)


class AtelierError(Exception):
    """The API refused a request (or could not be reached): ``status`` (0 when no answer came),
    ``field`` (the request field it names, or ``service``), ``message`` and ``request_id`` (the
    service's log has the request under it)."""

    def __init__(
        self,
        status: int,
        field: str,
        message: str,
        retry_after: float | None = None,
        request_id: str | None = None,
    ):
        super().__init__(f"{status} {field}: {message}" if status else f"{field}: {message}")
        self.status, self.field, self.message, self.retry_after = status, field, message, retry_after
        self.request_id = request_id


@dataclass(frozen=True)
class Preset:
    """A style preset: its name (``style_name=``), where it came from, its credit and licence
    (the bundled ones), and its thumbnail (a JPEG file's bytes)."""

    name: str
    source: str
    credit: str | None
    thumbnail: bytes

    def thumbnail_image(self) -> Image.Image:
        return _image(self.thumbnail)


@dataclass(frozen=True)
class ModelInfo:
    """One served model: its file, checksum, the provider its session runs on and its precision."""

    path: str
    sha256: str
    provider: str
    precision: str


@dataclass(frozen=True)
class Info:
    """What ``info`` says: the service's version, the device, each model; ``raw``: all of it."""

    version: str
    device: str
    exported: str
    models: dict[str, ModelInfo]
    raw: dict[str, Any] = field(repr=False)


class Atelier:
    def __init__(
        self,
        url: str = "http://localhost:3000",
        timeout: float = 120.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ):
        """``api_key``: sent as ``Authorization: Bearer`` (default ``$ATELIER_API_KEY``; none when unset)."""
        self.url = url.rstrip("/")
        self.retries, self.max_retry_wait = retries, max_retry_wait
        api_key = api_key if api_key is not None else os.environ.get("ATELIER_API_KEY")
        headers = {"User-Agent": f"atelier-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport, headers=headers)

    def __enter__(self) -> Atelier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- GAN ------------------------------------------------------------------------------------

    def sample(
        self,
        n: int = 1,
        seed: int | None = None,
        label: int | None = None,
        truncation: float = 1.0,
        format: Format = "png",
        style_name: str | Sequence[str] | None = None,
        style: ImageInput | Sequence[ImageInput] | None = None,
        weights: Sequence[float] | None = None,
        strength: float | None = None,
    ) -> list[Image.Image]:
        """``n`` generated images; image i was drawn from seed ``seed + i`` (in its ``.info["seed"]``).
        With a style (preset(s) ``style_name`` and/or uploaded ``style`` image(s), blended with
        ``weights`` as in ``stylize``), painted in it at 256 px with ``strength`` (None: the service's default)."""
        response = self._post(
            "sample",
            **_request(
                dict(n=n, seed=seed, label=label, truncation=truncation, format=format, strength=strength),
                style,
                style_name,
                weights,
            ),
        )
        body = response.json()
        images = [_image(b64) for b64 in body["images"]]
        for image, s, lab in zip(images, body["seeds"], body["labels"] or [None] * len(images)):
            image.info.update(seed=s, label=lab, model=body["model"], style=body.get("style"))
        return images

    def sample_grid(
        self,
        n: int = 16,
        seed: int | None = None,
        label: int | None = None,
        truncation: float = 1.0,
        format: Format = "png",
        style_name: str | Sequence[str] | None = None,
        style: ImageInput | Sequence[ImageInput] | None = None,
        weights: Sequence[float] | None = None,
        strength: float | None = None,
    ) -> Image.Image:
        """The same samples tiled into one image; its seed in ``.info["seed"]``, its style in ``.info["style"]``."""
        response = self._post(
            "sample_grid",
            **_request(
                dict(n=n, seed=seed, label=label, truncation=truncation, format=format, strength=strength),
                style,
                style_name,
                weights,
            ),
        )
        image = _image(response.content)
        image.info.update(seed=int(response.headers["X-Atelier-Seed"]), style=response.headers.get("X-Atelier-Style"))
        return image

    def interpolate(
        self,
        seed_a: int,
        seed_b: int,
        steps: int = 8,
        method: Literal["slerp", "lerp"] = "slerp",
        truncation: float = 1.0,
        label: int | None = None,
        format: Format = "png",
    ) -> list[Image.Image]:
        """``steps`` images from seed_a's image to seed_b's, both ends included."""
        body = self._json(
            "interpolate",
            seed_a=seed_a,
            seed_b=seed_b,
            steps=steps,
            method=method,
            truncation=truncation,
            label=label,
            format=format,
        )
        return [_image(b64) for b64 in body["images"]]

    # --- style ----------------------------------------------------------------------------------

    def stylize(
        self,
        content: ImageInput,
        style: ImageInput | Sequence[ImageInput] | None = None,
        style_name: str | Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        strength: float | None = None,
        preserve_color: bool = False,
        max_side: int = 512,
        format: Format | Literal["gif"] | None = None,
    ) -> Image.Image:
        """``content`` repainted in the style of preset(s) ``style_name`` and/or uploaded ``style`` image(s),
        blended with ``weights`` (presets first, then uploads). ``.info["style"]`` says what was used.
        ``format`` None: PNG for a photo; an animated GIF or WebP comes back animated, as the same
        kind (an animated PIL image: ``n_frames``, ``save(..., save_all=True)``)."""
        request = _request(
            dict(strength=strength, preserve_color=preserve_color, max_side=max_side, format=format),
            style,
            style_name,
            weights,
            multipart=True,
        )
        request["files"].insert(0, ("content", ("content", _bytes(content), "application/octet-stream")))
        response = self._post("stylize", **request)
        image = _image(response.content)
        image.info["style"] = response.headers.get("X-Atelier-Style")
        return image

    def styles(self) -> list[Preset]:
        """The presets: name, source, credit and a JPEG thumbnail."""
        return [
            Preset(s["name"], s["source"], s.get("credit"), base64.b64decode(s["thumbnail"]))
            for s in self._json("styles")["styles"]
        ]

    def info(self) -> Info:
        """Models, versions, checksums, device, providers, precision, queue."""
        raw = self._json("info")
        models = {
            role: ModelInfo(m["path"], m["sha256"], m["provider"], m["precision"]) for role, m in raw["models"].items()
        }
        return Info(raw["version"], raw["device"], raw["exported"], models, raw)

    # --- transport ------------------------------------------------------------------------------

    def _json(self, endpoint: str, **fields: Any) -> Any:
        return self._post(endpoint, json=_fields(**fields)).json()

    def _post(self, endpoint: str, **request: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(f"/{endpoint}", **request)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise AtelierError(0, "service", f"cannot reach {self.url}: {e}") from e
                _back_off(0.5 * 2**attempt, self.max_retry_wait)
                continue
            if response.is_success:
                return response
            error = _error(response)
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                raise error
            _back_off(error.retry_after if error.retry_after is not None else 2**attempt, self.max_retry_wait)
        raise AssertionError("unreachable")


def _back_off(seconds: float, longest: float) -> None:
    """Wait ``seconds`` (what the service asked for) plus up to half as much again, at most ``longest``."""
    time.sleep(min(longest, seconds * (1 + 0.5 * random.random())))


def _fields(**fields: Any) -> dict[str, Any]:
    """JSON fields, the unset (None) ones left out so the service's defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}


def _request(
    fields: dict[str, Any],
    style: ImageInput | Sequence[ImageInput] | None,
    style_name: str | Sequence[str] | None,
    weights: Sequence[float] | None,
    multipart: bool = False,
) -> dict[str, Any]:
    """The keyword arguments of a POST with a style: JSON, or a multipart form when there are
    files (uploaded styles) or ``multipart`` (stylize always sends its content as a file)."""
    styles = [] if style is None else list(style) if isinstance(style, (list, tuple)) else [style]
    names = [style_name] if isinstance(style_name, str) else list(style_name or [])
    fields = _fields(
        **fields,
        style_name=",".join(names) or None,
        weights=",".join(str(float(w)) for w in weights) if weights is not None else None,
    )
    if not styles and not multipart:
        return {"json": fields}
    files = [("style", (f"style{i}", _bytes(s), "application/octet-stream")) for i, s in enumerate(styles)]
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
    return {"files": files, "data": data}


def _bytes(image: ImageInput) -> bytes:
    if isinstance(image, bytes):
        return image
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    return Path(image).read_bytes()


def _image(data: str | bytes) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def _error(response: httpx.Response) -> AtelierError:
    """The API's ``{"error": "<field>: <message>", "detail": [{"loc": [field], "msg": ...}], "request_id": ...}``
    as an exception."""
    retry_after = response.headers.get("Retry-After")
    retry = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    field, message = "service", response.text.strip() or response.reason_phrase
    try:
        body = response.json()
        detail = (body.get("detail") or [{}])[0]
        loc = [str(part) for part in detail.get("loc", []) if part not in ("body",)]
        field = loc[-1] if loc else field
        message = detail.get("msg") or body.get("error") or message
    except (ValueError, AttributeError, IndexError, TypeError):
        pass
    return AtelierError(response.status_code, field, message, retry, response.headers.get("X-Request-ID"))
