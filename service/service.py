"""Atelier's HTTP service: BentoML on ONNX Runtime. ``bentoml serve`` (see bentofile.yaml).

Configuration (environment variables, the one mechanism):
  ATELIER_EXPORTS    folder with manifest.json and the ONNX files (default: exports/ beside service/)
  ATELIER_PROVIDERS  ONNX Runtime provider preference, e.g. ``cuda,cpu`` (default) or ``cpu``
"""

from __future__ import annotations

import base64
import math
import re
import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, Field, Strict
from starlette.responses import Response

from service.errors import error_response
from service.gan import GanSampler
from service.images import FORMATS, ImageInputError, decode_image, encode_image, tile_grid
from service.limits import BodyGuard
from service.manifest import load_manifest
from service.runtime import device_name, open_session, parse_providers
from service.style import StyleTransfer, mix_stats

DEFAULT_EXPORTS = Path(__file__).resolve().parent.parent / "exports"
MAX_SAMPLES = 64
MAX_STEPS = 64
JSON_BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 20 * 1024 * 1024  # per image file
MAX_MEGAPIXELS = 40
STYLIZE_BODY_LIMIT = 2 * UPLOAD_LIMIT + 1024 * 1024  # content + style + form fields
PRESET_NAME = r"^[a-z0-9_-]{1,64}$"
MAX_STYLES = 8  # styles blended in one request, presets and uploads together

Format = Literal["png", "jpeg", "webp"]
Seed = Annotated[int, Strict(), Ge(0), Le(2**32 - 1)]
Truncation = Annotated[float, Gt(0.0), Le(1.0)]
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


@bentoml.service(
    name="atelier",
    workers=1,
    traffic={"timeout": 120, "max_concurrency": 32},
    http={"cors": {"enabled": False}},
)
class Atelier:
    def __init__(self) -> None:
        self.exports = Path(os.environ.get("ATELIER_EXPORTS", DEFAULT_EXPORTS)).resolve()
        providers = parse_providers(os.environ.get("ATELIER_PROVIDERS", "cuda,cpu"))
        self.manifest = load_manifest(self.exports)  # every file's sha256 verified
        models = self.manifest["models"]
        self.sessions: dict[str, Any] = {
            role: open_session(self.exports / entry["path"], providers) for role, entry in models.items()
        }
        self.gan = GanSampler(self.sessions["generator"], models["generator"]) if "generator" in models else None
        self.style = (StyleTransfer(self.exports, self.manifest, self.sessions["style_encoder"],
                                    self.sessions["stylizer"])
                      if "stylizer" in models else None)
        self.device = device_name(self.provider(next(iter(self.sessions))) if self.sessions else "")
        self.warm_up()
        self.ready = True

    def warm_up(self) -> None:
        """Run each model once at the shapes served most, so the first request pays no set-up cost."""
        if self.gan:
            for n in (1, MAX_SAMPLES):
                self.gan.sample(0, n, 1.0, self.gan.default_labels(n))
        if self.style:
            stats = next(iter(self.style.presets.values()))
            for side in (256, 512):
                self.style.stylize(np.full((side, side, 3), 128, np.uint8), stats, 1.0, False, side)

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    def provider(self, role: str) -> str:
        return self.sessions[role].get_providers()[0]

    # --- GAN sampling -------------------------------------------------------------------------

    def _check_gan(self, label: int | None) -> Response | None:
        if self.gan is None:
            return error_response("model", "no generator in this export (run `make train export`)", 503)
        if label is not None:
            if not self.gan.num_classes:
                return error_response("label", "this generator is unconditional; leave label out")
            if label >= self.gan.num_classes:
                return error_response("label", f"must be in 0..{self.gan.num_classes - 1} "
                                               f"(classes: {', '.join(self.gan.labels)}), got {label}")
        return None

    def _sample(self, n: int, seed: int | None, truncation: float, label: int | None):
        seed = secrets.randbelow(2**32) if seed is None else seed
        labels = [label] * n if label is not None else self.gan.default_labels(n)
        seeds, images = self.gan.sample(seed, n, truncation, labels)
        return seed, seeds, labels, images

    @bentoml.api
    def sample(
        self,
        n: Annotated[int, Strict(), Ge(1), Le(MAX_SAMPLES)] = 1,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        label: Label | None = None,
        format: Format = "png",
    ) -> SampleResponse:
        """Generate ``n`` images. The same seed (and truncation, label) gives the same images on every call."""
        if (error := self._check_gan(label)) is not None:
            return error
        seed, seeds, labels, images = self._sample(n, seed, truncation, label)
        return SampleResponse(
            seed=seed, seeds=seeds, labels=labels, images=[_b64(encode_image(img, format)) for img in images],
            format=format, width=images.shape[2], height=images.shape[1], model=self._model_id("generator"),
        )

    @bentoml.api
    def sample_grid(
        self,
        n: Annotated[int, Strict(), Ge(1), Le(MAX_SAMPLES)] = 16,
        seed: Seed | None = None,
        truncation: Truncation = 1.0,
        label: Label | None = None,
        format: Format = "png",
    ) -> Annotated[Path, bentoml.validators.ContentType("image/*")]:
        """The same samples as ``sample``, tiled into one image (row-major, near-square); the seed is in X-Atelier-Seed."""
        if (error := self._check_gan(label)) is not None:
            return error
        seed, _, _, images = self._sample(n, seed, truncation, label)
        return Response(encode_image(tile_grid(images), format), media_type=FORMATS[format],
                        headers={"X-Atelier-Seed": str(seed)})

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
            seed_a=seed_a, seed_b=seed_b, steps=steps, method=method, label=label,
            images=[_b64(encode_image(img, format)) for img in images], format=format,
            width=images.shape[2], height=images.shape[1], model=self._model_id("generator"),
        )

    # --- style transfer ------------------------------------------------------------------------

    @bentoml.api
    def stylize(
        self,
        content: Path = Field(description="the photo to repaint (png, jpeg, webp, gif, bmp, tiff; at most 20 MB, 40 MP)"),
        # Typed with a None default: BentoML 1.4.39 cannot build an optional file field
        # (`Path | None` is not read as a file, `Optional[Path]` fails with "unhashable FileSchema").
        style: list[Path] = Field(default=None, description="style image(s); repeat the field to blend several"),
        style_name: str | None = Field(default=None, description="preset(s) from /styles, comma-separated to blend"),
        weights: str | float | list[float] | None = Field(
            default=None, description="blend weights, comma-separated: one per style, presets first "
                                      "(in style_name order), then uploads; default equal"),
        strength: Annotated[float, Ge(0.0), Le(1.0)] = 1.0,
        preserve_color: bool = False,
        max_side: Annotated[int, Strict(), Ge(64), Le(2048)] = 512,
        format: Format = "png",
    ) -> Annotated[Path, bentoml.validators.ContentType("image/*")]:
        """Repaint ``content`` in the style of presets and/or uploaded images (multipart/form-data).

        Several styles (``style_name=a,b`` and/or repeated ``style`` files) are blended by mixing
        their statistics with ``weights``. The output keeps the content's aspect ratio, its long
        side at most ``max_side``.
        """
        if self.style is None:
            return error_response("model", "no style model in this export (run `make train export`)", 503)
        names = [n.strip() for n in style_name.split(",")] if style_name is not None else []
        uploads = list(style or [])
        if not names and not uploads:
            return error_response("style", "give a style: style (an image file) and/or style_name (a preset)")
        if len(names) + len(uploads) > MAX_STYLES:
            return error_response("style", f"at most {MAX_STYLES} styles in one request, got {len(names) + len(uploads)}")
        try:
            blend = _blend_weights(weights, len(names) + len(uploads))
            pixels = _decode(_upload_bytes(content, "content"), "content")
            stats, sources = [], []
            for name in names:
                if not re.fullmatch(PRESET_NAME, name) or name not in self.style.presets:
                    return error_response("style_name", f"unknown preset {name!r}; "
                                                        f"available: {', '.join(sorted(self.style.presets))}")
                stats.append(self.style.presets[name])
                sources.append(f"preset:{name}")
            for upload in uploads:
                data = _upload_bytes(upload, "style")
                upload_stats, cached = self.style.uploaded_style_stats(data, lambda d=data: _decode(d, "style"))
                stats.append(upload_stats)
                sources.append("upload (cached statistics)" if cached else "upload")
        except ImageInputError as e:
            return error_response(e.field, e.message)
        image = self.style.stylize(pixels, mix_stats(stats, blend), strength, preserve_color, max_side)
        described = ", ".join(f"{src} x{w:.3g}" for src, w in zip(sources, blend)) if len(sources) > 1 else sources[0]
        return Response(encode_image(image, format), media_type=FORMATS[format],
                        headers={"X-Atelier-Style": described, "X-Atelier-Size": f"{image.shape[1]}x{image.shape[0]}"})

    @bentoml.api
    def styles(self) -> dict[str, Any]:
        """The style presets: name, where it came from, and a JPEG thumbnail (base64)."""
        if self.style is None:
            return {"styles": []}
        return {"styles": [
            {"name": name, "source": self.style.preset_sources[name], "thumbnail": _b64(thumb), "thumbnail_format": "jpeg"}
            for name, thumb in self.style.thumbnails.items()
        ]}

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
            }
        if "generator" in models:
            g = self.manifest["models"]["generator"]
            models["generator"].update({
                "latent_dim": g["latent_dim"], "image_size": g["image_size"], "channels": g["channels"],
                "class_labels": g["class_labels"], "dataset": g["dataset"], "metrics": _finite(g.get("metrics")),
                "latent": g["latent"],
            })
        if "stylizer" in models:
            st = self.manifest["style"]
            vgg = {**st["vgg"], "weights": st["vgg"]["weights"] and Path(st["vgg"]["weights"].split("#")[0]).name}
            models["style_encoder"].update({"vgg": vgg, "levels": st["levels"]})
            models["stylizer"].update({"levels": st["levels"], "transform": st["transform"],
                                       "training": {"metrics": _finite(st.get("metrics"))},
                                       "quality": _finite(st.get("quality")),
                                       "presets": [p["name"] for p in st["presets"]]})
        return {
            "service": "atelier",
            "version": self.manifest["atelier_version"],
            "manifest_version": self.manifest["version"],
            "exported": self.manifest["created"],
            "exports": self.exports.name,  # the folder's name: info never shows host paths
            "device": self.device,
            "models": models,
        }


def _blend_weights(weights: str | float | list[float] | None, count: int) -> list[float]:
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
        raise ImageInputError("weights", f"{len(values)} weights for {count} style(s): one per style, "
                                         "presets first, then uploads")
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


def _decode(data: bytes, field: str) -> np.ndarray:
    """Every limit checked: dimensions from the header before any pixel is decoded."""
    return decode_image(data, field, max_bytes=UPLOAD_LIMIT, max_pixels=MAX_MEGAPIXELS * 1_000_000)


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


Atelier.add_asgi_middleware(
    BodyGuard,
    limits={**{f"/{name}": JSON_BODY_LIMIT for name in ("sample", "sample_grid", "interpolate", "styles", "info")},
            "/stylize": STYLIZE_BODY_LIMIT},
    fields={f"/{name}": list(api.input_spec.model_fields) for name, api in Atelier.apis.items()},
    may_be_empty=("/styles", "/info"),
)
