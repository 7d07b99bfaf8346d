"""The style presets of an export: the bundled pictures and a ``--styles-dir`` folder's, each one's
statistics (and, with patches on, its picture) in ``style_presets.npz`` through the exported
style encoder, a thumbnail, and its credit."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from service.manifest import Preset
from service.style import encode_style, preset_keys, resize_long_side
from training.folders import UNREADABLE
from training.runs import atomic_write_bytes
from training.style.data import bundled_style_images, find_images, load_image, picture_credits

THUMB_SIDE = 128


def preset_name(stem: str, taken: set[str]) -> str:
    """File stem -> lower-case [a-z0-9_-] name, unique among ``taken`` (adds -2, -3, ...)."""
    base = re.sub(r"[^a-z0-9_-]+", "_", stem.lower()).strip("_-") or "style"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def check_styles_dir(styles_dir: Path) -> None:
    """Refuse a styles folder with a file Pillow cannot open (each file there becomes a preset the
    service promises, so one is not silently left out): a ValueError naming the files."""
    bad = []
    for path in find_images(styles_dir):
        try:
            load_image(path)  # as the export reads it
        except UNREADABLE:
            bad.append(path.relative_to(styles_dir).as_posix())
    if bad:
        raise ValueError(f"styles folder {styles_dir}: not a readable image: {', '.join(bad)} (fix or remove it)")


def collect_styles(styles_dir: Path | None) -> list[tuple[str, str, np.ndarray]]:
    """(name, source, HxWx3 uint8) for every bundled style image, then every image in ``styles_dir``."""
    out: list[tuple[str, str, np.ndarray]] = []
    taken: set[str] = set()
    for name, img in bundled_style_images().items():
        name = preset_name(name, taken)
        taken.add(name)
        out.append((name, f"bundled:{name}", img))
    for path in find_images(styles_dir) if styles_dir else []:
        name = preset_name(path.stem, taken)
        taken.add(name)
        out.append((name, f"file:{path.relative_to(styles_dir).as_posix()}", load_image(path)))
    return out


def thumbnail_jpeg(img: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(resize_long_side(img, side)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_presets(
    out_dir: Path,
    encoder_onnx: Path,
    levels: Sequence[str],
    styles_dir: Path | None,
    side: int,
    log: Callable[[str], None],
    cell: int = 0,
) -> list[Preset]:
    """Statistics (through the exported style encoder on ONNX Runtime), with patches on (``cell``)
    the style picture (uint8), and thumbnails of every preset."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"])
    arrays: dict[str, np.ndarray] = {}
    presets = []
    credits = picture_credits()
    for name, source, img in collect_styles(styles_dir):
        arrays.update(zip(preset_keys(name, levels, bool(cell)), encode_style(session, img, side, levels, cell)))
        thumb = f"presets/{name}.jpg"
        atomic_write_bytes(out_dir / thumb, thumbnail_jpeg(img))
        credit = credits.get(source.removeprefix("bundled:")) if source.startswith("bundled:") else None
        presets.append(Preset(name=name, thumbnail=thumb, source=source, **({"credit": credit} if credit else {})))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out_dir / "style_presets.npz", buf.getvalue())
    log(f"presets: {len(presets)} ({', '.join(p.name for p in presets)})")
    return presets
