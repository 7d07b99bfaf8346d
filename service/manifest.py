"""Read ``exports/manifest.json`` — the only contract with training — and verify every file in it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SUPPORTED_VERSION = 1


class ManifestError(RuntimeError):
    """The export folder cannot be served as it is; the message says why and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(exports: Path) -> dict[str, Any]:
    """Parse the manifest and check the sha256 of every model and asset; refuse on any mismatch."""
    path = exports / "manifest.json"
    if not path.exists():
        raise ManifestError(f"{path} does not exist: run `make train export` first (or set ATELIER_EXPORTS)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from e
    if manifest.get("version") != SUPPORTED_VERSION:
        raise ManifestError(
            f"{path}: manifest version {manifest.get('version')!r}, this service reads {SUPPORTED_VERSION}"
        )
    entries = list(manifest.get("models", {}).values()) + list(manifest.get("assets", []))
    for entry in entries:
        verify_file(exports, entry)
    return manifest


PRECISIONS = ("auto", "fp32", "fp16")


def choose_precision(role: str, entry: dict[str, Any], wanted: str, on_cuda: bool) -> tuple[str, str]:
    """``(file, precision)`` to serve a model with, under ``ATELIER_PRECISION`` = ``wanted``.

    ``auto``: the fp16 variant on CUDA when the export measured it within its parity bound, on
    the CPU provider and in fp16 arithmetic, else fp32 (on the CPU fp16 runs slower). ``fp16``:
    the variant, or refuse when there is none within its bound. ``fp32``: the model itself."""
    if wanted not in PRECISIONS:
        raise ManifestError(f"ATELIER_PRECISION={wanted!r}: use one of {', '.join(PRECISIONS)}")
    variant = entry.get("variants", {}).get("fp16")
    parity = variant["parity"] if variant is not None else {}
    # An export from before the fp16-arithmetic check was checked on the CPU provider alone, which
    # computes most fp16 ops in float32 and so cannot see an overflow (the stylizer's NaN on CUDA).
    checked = "fp16_arithmetic" in parity
    usable = checked and parity["within_bound"]
    if wanted == "fp16" and not usable:
        if variant is None:
            why = "has no fp16 variant (re-run `make export`)"
        elif not checked:
            why = "fp16 variant was checked on the CPU provider only, which computes in float32 (re-run `make export`)"
        elif not parity["fp16_arithmetic"]["finite"]:
            why = "fp16 variant overflows float16 (not finite in fp16 arithmetic)"
        else:
            worst = min(p for p in (parity["min_psnr_db"], parity["fp16_arithmetic"]["min_psnr_db"]) if p is not None)
            why = f"fp16 variant is {worst} dB from PyTorch fp32, below its {parity['bound_psnr_db']} dB bound"
        raise ManifestError(f"ATELIER_PRECISION=fp16: {role} {why}")
    if usable and (wanted == "fp16" or (wanted == "auto" and on_cuda)):
        return variant["path"], "fp16"
    return entry["path"], "fp32"


def verify_file(exports: Path, entry: dict[str, Any]) -> Path:
    file = (exports / entry["path"]).resolve()
    if exports.resolve() not in file.parents:
        raise ManifestError(f"manifest path {entry['path']!r} points outside {exports}")
    if not file.is_file():
        raise ManifestError(f"{file} is listed in the manifest but missing: re-run `make export`")
    actual = sha256_file(file)
    if actual != entry["sha256"]:
        raise ManifestError(
            f"{file}: sha256 {actual} does not match the manifest ({entry['sha256']}); "
            "refusing to serve it — re-run `make export`"
        )
    return file


class ExportWatch:
    """Whether the export folder still holds the files the service verified and loaded at start.

    The service keeps serving the models it loaded (they are in memory) whatever happens to the
    folder; ``check()`` tells an operator that a restart would load something else, or refuse.
    A file is re-hashed only when its size or modification time changed since the last check.
    """

    def __init__(self, exports: Path, manifest: dict[str, Any]):
        self.exports = exports
        self.entries = [{"path": "manifest.json", "sha256": sha256_file(exports / "manifest.json")}]
        self.entries += list(manifest.get("models", {}).values()) + list(manifest.get("assets", []))
        self._seen: dict[str, tuple[tuple[int, int], str]] = {}  # path -> ((size, mtime_ns), sha256)
        for entry in self.entries:  # just verified by load_manifest: no need to hash them again
            st = (exports / entry["path"]).stat()
            self._seen[entry["path"]] = ((st.st_size, st.st_mtime_ns), entry["sha256"])

    def check(self) -> dict[str, Any]:
        changed, missing = [], []
        for entry in self.entries:
            file = self.exports / entry["path"]
            try:
                st = file.stat()
            except OSError:
                missing.append(entry["path"])
                continue
            key = (st.st_size, st.st_mtime_ns)
            seen = self._seen.get(entry["path"])
            digest = seen[1] if seen and seen[0] == key else sha256_file(file)
            self._seen[entry["path"]] = (key, digest)
            if digest != entry["sha256"]:
                changed.append(entry["path"])
        status = {"matches_loaded": not changed and not missing, "changed": changed, "missing": missing}
        if changed or missing:
            status["note"] = (
                "the folder no longer holds the verified files this service loaded and still "
                "serves; a restart will refuse it until it is exported again"
            )
        return status
