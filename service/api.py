"""What a request may carry and what it gets back: the API's limits, field types, the GAN
endpoints' request models and the response models. A leaf: it imports nothing of the service,
and every other module may import it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field, Strict

MAX_SAMPLES = 64
MAX_STEPS = 64
JSON_BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 20 * 1024 * 1024  # per image file
MAX_MEGAPIXELS = 40
IMAGE_LIMITS = {"max_bytes": UPLOAD_LIMIT, "max_pixels": MAX_MEGAPIXELS * 1_000_000}  # every uploaded image
FORM_BODY_LIMIT = 2 * UPLOAD_LIMIT + 1024 * 1024  # a multipart body: content + style + form fields
PRESET_NAME = r"^[a-z0-9_-]{1,64}$"
MAX_STYLES = 8  # styles blended in one request, presets and uploads together
MAX_IN_FLIGHT = 32  # API requests at once per worker, and stylize's apart; one more: 429 + Retry-After
# Peak memory of a stylisation per output pixel (the quick profile on CPU: 1.5 GB at 1024 px, 5.8 GB at
# 2048 px, less a 0.2 GB base), with a margin.
STYLIZE_BYTES_PER_PIXEL = 1500
STYLIZE_BASE_BYTES = 200 * 2**20
# Animated content (GIF, WebP): frames x output pixels stylised in one request, and frames x canvas
# pixels decoded (each frame is composited at the file's full size before it is resized).
ANIMATION_MAX_FRAMES = 300
ANIMATION_MAX_MEGAPIXELS = 16  # e.g. 60 frames at 512x512, 200 at 320x240
ANIMATION_MAX_DECODE_MEGAPIXELS = 200
ANIMATION_BYTES_PER_PIXEL = 6  # the decoded and the stylised frames, uint8 RGB, held until encoded
# Generated samples stylised on the way out are first enlarged to this long side (Lanczos), so that
# the style has room to show on a 32-px digit.
SAMPLE_STYLE_SIDE = 256

Format = Literal["png", "jpeg", "webp"]
StyleFormat = Literal["png", "jpeg", "webp", "gif"]
Seed = Annotated[int, Strict(), Ge(0), Le(2**32 - 1)]
# Strict: a boolean or a string is refused, not read as a number (the OpenAPI document says number).
Truncation = Annotated[float, Strict(), Gt(0.0), Le(1.0)]
Strength = Annotated[float, Strict(), Ge(0.0), Le(1.0)]
STRENGTH = "0 (the photo) to 1 (the full style); default: the export's (info: models.stylizer.default_strength)"
Weights = str | Annotated[float, Strict()] | list[Annotated[float, Strict()]] | None
Flag = Annotated[bool, Strict()]
Label = Annotated[int, Strict(), Ge(0)]
Count = Annotated[int, Strict(), Ge(1), Le(MAX_SAMPLES)]
Steps = Annotated[int, Strict(), Ge(2), Le(MAX_STEPS)]
MaxSide = Annotated[int, Strict(), Ge(64), Le(2048)]
# Typed with a None default: BentoML 1.4.39 cannot build an optional file field
# (`Path | None` is not read as a file, `Optional[Path]` fails with "unhashable FileSchema").
StyleFiles = list[Path]
STYLE_NAME = "preset(s) from /styles, comma-separated to blend"
WEIGHTS = "blend weights, comma-separated: one per style, presets first (in style_name order), then uploads"


# --- the GAN endpoints' request bodies (their `input_spec`) --------------------------------------
# Each field once, in a group; an endpoint's model combines the groups it takes. Pydantic orders a
# model's fields base by base from the last base to the first, so the bases below read right to
# left: the fields keep the order the endpoints had (the OpenAPI document's, the unknown-field
# answer's list, and the positional order of BentoML's Python client).
# Comments, not docstrings: pydantic makes a model's docstring its schema's description.


class _Fields(BaseModel):
    # The title BentoML gives the models it makes of an endpoint's parameters: its validation errors
    # say "1 validation error for Input", and the document's request schemas are titled so.
    model_config = ConfigDict(title="Input")


class _Batch(_Fields):  # how many samples, from which seed
    n: Count = 1
    seed: Seed | None = None


class _Walk(_Fields):  # interpolate's ends and the path between them
    seed_a: Seed
    seed_b: Seed
    steps: Steps = 8
    method: Literal["slerp", "lerp"] = "slerp"


class _Latent(_Fields):  # where in the generator's latent space: every GAN endpoint
    truncation: Truncation = 1.0
    label: Label | None = None


class _Painting(_Fields):  # the style the samples are painted in, if any
    style_name: str | None = Field(
        default=None, description=f"{STYLE_NAME}: the samples come back painted, enlarged to {SAMPLE_STYLE_SIDE} px"
    )
    style: StyleFiles = Field(
        default=None, description="style image(s) to paint the samples in (multipart/form-data); repeat to blend"
    )
    weights: Weights = Field(default=None, description=WEIGHTS)
    strength: Strength | None = Field(default=None, description=STRENGTH)


class _Encoding(_Fields):  # every GAN endpoint
    format: Format = "png"


class SampleRequest(_Encoding, _Painting, _Latent, _Batch):  # n, seed, truncation, ..., strength, format
    pass


class SampleGridRequest(SampleRequest):  # sample's fields, in their places; 16 samples by default
    n: Count = 16
    style_name: str | None = Field(default=None, description="preset(s) from /styles, as for sample")
    style: StyleFiles = Field(default=None, description="style image(s), as for sample (multipart/form-data)")


class InterpolateRequest(_Encoding, _Latent, _Walk):  # seed_a, seed_b, steps, method, truncation, label, format
    pass


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


class Preset(BaseModel):
    name: str
    source: str = Field(description="bundled:<name> (shipped with Atelier) or file:<path in STYLES_DIR>")
    credit: str | None = Field(default=None, description="what it is, its rights, package and licence")
    thumbnail: str = Field(description="base64-encoded image file")
    thumbnail_format: Literal["jpeg"] = "jpeg"


class StylesResponse(BaseModel):
    styles: list[Preset]


@dataclass(frozen=True)
class StyleChoice:
    """The styles a request names, checked: presets, uploaded files' bytes, one weight each."""

    names: list[str]  # presets
    uploads: list[bytes]  # uploaded styles
    blend: list[float]  # one weight per style, presets first


@dataclass(frozen=True)
class Stylisation:
    """A checked stylize request, as the heavy-work thread runs it."""

    style: StyleChoice
    strength: float | None  # None: the export's default
    preserve_color: bool
    max_side: int
    format: str | None
