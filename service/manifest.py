"""``exports/manifest.json``, the only contract between training and the service: its typed schema,
and reading, verifying and writing it.

Training builds a ``Manifest`` and writes its ``to_json()``; the service reads it with
``load_manifest``, which refuses another version, a field out of the schema, or a file whose
sha256 does not match. What each field means: docs/architecture.md, "The manifest contract".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

VERSION = 2  # 2: typed; the prose rules of version 1 moved to the docs


class ManifestError(RuntimeError):
    """The export folder cannot be served as it is; the message says why and what to do."""


class Fields(BaseModel):
    # forbid: a field the schema does not know is a writer's mistake, or another version
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tensor(Fields):
    name: str
    dtype: str
    shape: list[int | str]  # a str names a dynamic axis (``batch``, ``height``, ``16*h``)


class Parity(Fields):
    """The largest |PyTorch - ONNX Runtime| on fixed inputs at export, and its bound."""

    max_abs_diff: float
    atol: float
    checked_on: str
    seeds: list[int] | None = None


class Fp16Arithmetic(Fields):
    checked_on: str
    min_psnr_db: float | None  # None: not finite
    finite: bool
    cases: int


class Fp16Parity(Fields):
    vs: str
    min_psnr_db: float | None
    bound_psnr_db: float
    within_bound: bool  # on the CPU provider and in fp16 arithmetic: only then served (``choose_precision``)
    checked_on: str
    cases: int
    fp16_arithmetic: Fp16Arithmetic


class Variant(Fields):
    path: str  # verified through ``assets``
    precision: Literal["fp16"]
    ops_in_fp16: list[str]
    parity: Fp16Parity


class FileEntry(Fields):
    path: str  # relative to the export folder
    sha256: str


class ModelEntry(FileEntry):
    opset: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    parity: Parity
    variants: dict[str, Variant] = {}


class Latent(Fields):
    """How a seed becomes a latent (``service/sampling.py``), so a client can reproduce it."""

    distribution: Literal["standard_normal"]
    rng: str
    seeds: str
    truncation: str


class Generator(ModelEntry):
    latent_dim: int
    image_size: int
    channels: int
    output_range: tuple[float, float]
    class_labels: list[str] | None  # None: unconditional
    latent: Latent
    dataset: str
    run: str
    training: dict[str, Any]  # the run's options (training/gan/options.py ``GanOptions.to_dict``)
    metrics: dict[str, Any] | None  # the run's metrics.json (training/gan/evaluate.py); None: not measured


class Normalization(Fields):
    input: str
    scale: float
    mean: list[float]
    std: list[float]


class Vgg(Fields):
    source: str
    arch: str
    weights: str | None  # None: seeded random weights (tests only)
    weights_sha256: str | None
    normalization: Normalization
    random_weights: bool


class LowRank(Fields):
    """conv1_2 as a truncated-SVD pair in both style graphs, and how far it moves relu2_1."""

    rank: int
    of: int
    energy: float
    relu2_1_rel_err_max: float


class StyleEncoder(ModelEntry):
    role: Literal["style_encoder"]
    levels: list[str]
    feature_channels: dict[str, int]
    size_multiple: int
    vgg: Vgg
    conv1_2_low_rank: LowRank | None
    normalization: Normalization
    input_range: tuple[float, float]
    color: Literal["RGB"]


class TransformParity(Fields):
    vs: str
    max_rel_err: float
    rtol: float


class NewtonSchulzIters(Fields):
    content: int
    style: int
    most: int


class Stylizer(ModelEntry):
    role: Literal["stylizer"]
    levels: list[str]
    feature_channels: dict[str, int]
    size_multiple: int
    transform_parity: TransformParity
    input_range: tuple[float, float]
    output_range: tuple[float, float]
    transform: Literal["wct", "ot"]
    coarse_scales: list[int]
    fine_scales: list[int]
    coarse_shading_radius: int
    newton_schulz_iters: NewtonSchulzIters
    cov_eps: float
    style_cov_eps: float
    decoder_width: float
    decoder_widths: dict[str, float]
    pointwise_entry: list[str]
    conv1_2_low_rank: LowRank | None


class Models(Fields):
    """One entry per ONNX file; a missing role is allowed (its endpoints answer 501)."""

    generator: Generator | None = None
    style_encoder: StyleEncoder | None = None
    stylizer: Stylizer | None = None

    @model_validator(mode="after")
    def _style_whole(self) -> Models:
        if (self.style_encoder is None) != (self.stylizer is None):
            raise ValueError("style_encoder and stylizer come together")
        return self

    def roles(self) -> dict[str, ModelEntry]:
        return {role: getattr(self, role) for role in Models.model_fields if getattr(self, role) is not None}


class Preset(Fields):
    name: str
    thumbnail: str
    source: str  # ``bundled:<name>`` or ``file:<path in --styles-dir>``
    credit: str | None = None  # package, version, licence and a line on the picture


class Patches(Fields):
    """The patch pass: the stylizer's ``input`` for the style's picture, sized to ``cell``, and its
    settings (training/style/swap.py ``PatchSettings``; docs/style-transfer.md, "The style's shapes")."""

    input: str
    cell: int
    scale: int
    prior: float
    stride: int
    block: int
    shading: bool
    detail_gain: float
    detail_radius: int
    tone: float = 0.0  # absent in exports made before the option: off


class StyleQuality(Fields):
    reconstruction_psnr_db: dict[str, dict[str, float]]  # per level: per held-out photo, and the mean
    report: dict[str, Any] | None = None  # ``make report``'s headline numbers (training/style/report.py)


class Style(Fields):
    vgg: Vgg
    levels: list[str]
    feature_channels: dict[str, int]
    size_multiple: int
    transform: Literal["wct", "ot"]
    style_image_side: int
    presets_file: str
    presets: list[Preset]
    patches: Patches | None = None  # None: a statistics-only stylizer
    # the strength a request that gives none is painted at (the export's choice: docs/style-transfer.md)
    default_strength: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    training: dict[str, Any]  # the run's options (training/style/options.py)
    run: str
    metrics: dict[str, Any]
    quality: StyleQuality

    @property
    def cell(self) -> int:
        """The side a style picture is sized to a multiple of with patches on; 0 without."""
        return self.patches.cell if self.patches else 0


class Manifest(Fields):
    version: Literal[VERSION]  # the one version this code reads and writes
    atelier_version: str
    created: str
    models: Models
    assets: list[FileEntry]
    style: Style | None = None

    @model_validator(mode="after")
    def _style_section(self) -> Manifest:
        if (self.style is None) != (self.models.stylizer is None):
            raise ValueError("the style section comes with the style models, and only with them")
        return self

    def to_json(self) -> str:
        """The file's text; training writes it atomically (``training/runs.py``), last."""
        # a field left at its default is left out (an entry without variants, a preset without a
        # credit); NaN stays NaN, as the run's metrics hold it
        return json.dumps(self.model_dump(exclude_unset=True), indent=2) + "\n"

    def files(self) -> list[FileEntry]:
        """Every file the export holds: the models, then the assets."""
        return [*self.models.roles().values(), *self.assets]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path) -> Manifest:
    """Parse and validate a manifest file, without checking the files it lists."""
    if not path.exists():
        raise ManifestError(f"{path} does not exist: run `make train export` first (or set ATELIER_EXPORTS)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from e
    version = data.get("version") if isinstance(data, dict) else None
    if version != VERSION:
        raise ManifestError(f"{path}: manifest version {version!r}, this service reads {VERSION}: re-run `make export`")
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'manifest'}: {err['msg']}" for err in e.errors()[:5])
        raise ManifestError(f"{path} does not follow manifest version {VERSION} ({where}): re-run `make export`") from e


def load_manifest(exports: Path) -> Manifest:
    """Parse the manifest and check the sha256 of every model and asset; refuse on any mismatch."""
    manifest = read_manifest(exports / "manifest.json")
    for entry in manifest.files():
        verify_file(exports, entry)
    return manifest


def verify_file(exports: Path, entry: FileEntry) -> Path:
    file = (exports / entry.path).resolve()
    if exports.resolve() not in file.parents:
        raise ManifestError(f"manifest path {entry.path!r} points outside {exports}")
    if not file.is_file():
        raise ManifestError(f"{file} is listed in the manifest but missing: re-run `make export`")
    actual = sha256_file(file)
    if actual != entry.sha256:
        raise ManifestError(
            f"{file}: sha256 {actual} does not match the manifest ({entry.sha256}); "
            "refusing to serve it — re-run `make export`"
        )
    return file


PRECISIONS = ("auto", "fp32", "fp16")


def choose_precision(role: str, entry: ModelEntry, wanted: str, on_cuda: bool) -> tuple[str, str]:
    """``(file, precision)`` to serve a model with, under ``ATELIER_PRECISION`` = ``wanted``.

    ``auto``: the fp16 variant on CUDA when the export measured it within its parity bound, on
    the CPU provider and in fp16 arithmetic, else fp32 (on the CPU fp16 runs slower). ``fp16``:
    the variant, or refuse when there is none within its bound. ``fp32``: the model itself."""
    if wanted not in PRECISIONS:
        raise ManifestError(f"ATELIER_PRECISION={wanted!r}: use one of {', '.join(PRECISIONS)}")
    variant = entry.variants.get("fp16")
    usable = variant is not None and variant.parity.within_bound
    if wanted == "fp16" and not usable:
        if variant is None:
            why = "has no fp16 variant (re-run `make export`)"
        elif not variant.parity.fp16_arithmetic.finite:
            why = "fp16 variant overflows float16 (not finite in fp16 arithmetic)"
        else:
            parity = variant.parity
            worst = min(p for p in (parity.min_psnr_db, parity.fp16_arithmetic.min_psnr_db) if p is not None)
            why = f"fp16 variant is {worst} dB from PyTorch fp32, below its {parity.bound_psnr_db} dB bound"
        raise ManifestError(f"ATELIER_PRECISION=fp16: {role} {why}")
    if usable and (wanted == "fp16" or (wanted == "auto" and on_cuda)):
        return variant.path, "fp16"
    return entry.path, "fp32"


class ExportWatch:
    """Whether the export folder still holds the files the service verified and loaded at start.

    The service keeps serving the models it loaded (they are in memory) whatever happens to the
    folder; ``check()`` tells an operator that a restart would load something else, or refuse.
    A file is re-hashed only when its size or modification time changed since the last check.
    """

    def __init__(self, exports: Path, manifest: Manifest):
        self.exports = exports
        self.entries = [FileEntry(path="manifest.json", sha256=sha256_file(exports / "manifest.json"))]
        self.entries += manifest.files()
        self._seen: dict[str, tuple[tuple[int, int], str]] = {}  # path -> ((size, mtime_ns), sha256)
        for entry in self.entries:  # just verified by load_manifest: no need to hash them again
            st = (exports / entry.path).stat()
            self._seen[entry.path] = ((st.st_size, st.st_mtime_ns), entry.sha256)

    def check(self) -> dict[str, Any]:
        changed, missing = [], []
        for entry in self.entries:
            file = self.exports / entry.path
            try:
                st = file.stat()
            except OSError:
                missing.append(entry.path)
                continue
            key = (st.st_size, st.st_mtime_ns)
            seen = self._seen.get(entry.path)
            digest = seen[1] if seen and seen[0] == key else sha256_file(file)
            self._seen[entry.path] = (key, digest)
            if digest != entry.sha256:
                changed.append(entry.path)
        status = {"matches_loaded": not changed and not missing, "changed": changed, "missing": missing}
        if changed or missing:
            status["note"] = (
                "the folder no longer holds the verified files this service loaded and still "
                "serves; a restart will refuse it until it is exported again"
            )
        return status
