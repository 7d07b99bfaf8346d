"""Panels for a blind comparison of Atelier and the peer on the evaluation set.

    python tools/blind_panels.py --exports exports --out reports/blind [--pairs 13] [--seed 0] [--strength S]

For each of the report's first ``--pairs`` pairs (``training.style.report.fixed_pairs``, so the
first 13 use every photo and every style), one PNG: the photo and the style on top, Atelier's
picture (at the export's default strength, what the service paints at) and the peer's (at its full
strength) below, left and right drawn at random; ``key.json`` says which is which. Show the
panels to judges who do not know the key and ask which picture is the better one of that photo in
that style; then score their answers against the key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.imaging import image_to_tensor, tensor_to_image  # noqa: E402
from training.style.methods import FastModel, PeerModel, style_manifest  # noqa: E402
from training.style.report import fixed_pairs, held_out_pictures  # noqa: E402


def panel(photo: Image.Image, style: Image.Image, left: Image.Image, right: Image.Image, side: int) -> Image.Image:
    """Photo and style on top, the two candidates below, each fitted into a side x side cell."""
    out = Image.new("RGB", (2 * side, 2 * side + 40), "white")
    draw = ImageDraw.Draw(out)
    for (col, row), (image, label) in zip(
        [(0, 0), (1, 0), (0, 1), (1, 1)], [(photo, "photo"), (style, "style"), (left, "A"), (right, "B")]
    ):
        fitted = image.copy()
        fitted.thumbnail((side, side))
        out.paste(fitted, (col * side, row * (side + 20) + 20))
        draw.text((col * side + 4, row * (side + 20) + 4), label, fill="black")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--out", type=Path, default=Path("reports/blind"))
    p.add_argument("--pairs", type=int, default=13)
    p.add_argument("--size", type=int, default=384, help="long side of the photo and the outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the left/right draws")
    p.add_argument(
        "--strength",
        type=float,
        help="Atelier's strength (default: the export's default, what the service paints at); the peer's is 1",
    )
    args = p.parse_args(argv)
    manifest = style_manifest(args.exports)
    strength = manifest.style.default_strength if args.strength is None else args.strength
    fast = FastModel(args.exports, manifest, ["CPUExecutionProvider"])
    peer = PeerModel(torch.device("cpu"))
    contents, styles = held_out_pictures(None, None)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    key = {}
    for i, (c, s) in enumerate(fixed_pairs(list(contents), list(styles), args.pairs)):
        photo = image_to_tensor(contents[c], args.size)
        ours = tensor_to_image(fast.stylize(photo, fast.style.style_stats(styles[s]), strength))
        theirs = tensor_to_image(peer.stylize(photo, styles[s], 1.0, timed=False)[0])
        atelier_left = bool(rng.integers(0, 2))
        pair = (ours, theirs) if atelier_left else (theirs, ours)
        name = f"panel_{i:02d}.png"
        panel(tensor_to_image(photo), Image.fromarray(styles[s]), *pair, args.size).save(args.out / name)
        key[name] = {"content": c, "style": s, "atelier": "A" if atelier_left else "B", "strength": strength}
    (args.out / "key.json").write_text(json.dumps(key, indent=1) + "\n")
    print(f"wrote {len(key)} panels and key.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
