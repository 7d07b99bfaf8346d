"""``python -m atelier_client``: Atelier from the command line.

python -m atelier_client stylize photo.jpg --style wheat_field -o painted.png
python -m atelier_client stylize photo.jpg --style-image monet.jpg --strength 0.7 -o painted.jpg
python -m atelier_client sample --n 16 --seed 3 -o grid.png
python -m atelier_client sample --n 4 --seed 3 --style-image monet.jpg -o painted-grid.png
python -m atelier_client interpolate 3 9 --steps 12 -o walk.gif
python -m atelier_client styles | info
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from PIL import Image

from atelier_client import Atelier, AtelierError, __version__

SUFFIX_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def output_format(path: Path, gif: bool = False) -> str:
    fmt = SUFFIX_FORMAT.get(path.suffix.lower()) or ("gif" if gif and path.suffix.lower() == ".gif" else None)
    if fmt is None:
        raise SystemExit(f"error: -o {path}: use a .png, .jpg{', .gif' if gif else ''} or .webp file name")
    return fmt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m atelier_client",
        description="Atelier from the command line: style transfer and GAN samples over HTTP.",
        epilog="\n".join(__doc__.split("\n\n")[1].splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--url",
        default=os.environ.get("ATELIER_URL", "http://localhost:3000"),
        help="the service (default: $ATELIER_URL or http://localhost:3000)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("ATELIER_API_KEY"),
        help="the service's API key, if it has keys (default: $ATELIER_API_KEY)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument("--version", action="version", version=f"atelier-client {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stylize", help="repaint a photo in a preset's or an image's style")
    s.add_argument("content", type=Path, help="the photo, or an animated GIF or WebP (comes back animated)")
    s.add_argument("--style", action="append", default=[], help="a preset name (see `styles`); repeat to blend")
    s.add_argument("--style-image", action="append", default=[], type=Path, help="a style image; repeat to blend")
    s.add_argument(
        "--weights",
        type=lambda v: [float(x) for x in v.split(",")],
        help="blend weights, comma-separated: presets first, then images (default: equal)",
    )
    s.add_argument("--strength", type=float, help="0 (the photo) to 1 (fully styled); default: the service's")
    s.add_argument("--preserve-color", action="store_true", help="keep the photo's colours")
    s.add_argument("--max-side", type=int, default=512, help="long side of the result, px (default 512)")
    s.add_argument("-o", "--out", type=Path, required=True, help="result file (.png, .jpg, .webp, .gif)")

    g = sub.add_parser("sample", help="generate images, tiled into one grid image")
    g.add_argument("--n", type=int, default=16, help="how many (default 16)")
    g.add_argument("--seed", type=int, help="seed (default: random; printed)")
    g.add_argument("--label", type=int, help="class label (conditional models)")
    g.add_argument("--truncation", type=float, default=1.0, help="latent scale in (0, 1] (default 1)")
    g.add_argument(
        "--style", action="append", default=[], help="paint the samples in a preset (256 px); repeat to blend"
    )
    g.add_argument("--style-image", action="append", default=[], type=Path, help="... or in an image's style")
    g.add_argument("--weights", type=lambda v: [float(x) for x in v.split(",")], help="blend weights, as for stylize")
    g.add_argument("--strength", type=float, help="0 to 1, with a style (default: the service's)")
    g.add_argument("-o", "--out", type=Path, required=True, help="grid file (.png, .jpg, .webp)")

    i = sub.add_parser("interpolate", help="walk from one seed's image to another's")
    i.add_argument("seed_a", type=int)
    i.add_argument("seed_b", type=int)
    i.add_argument("--steps", type=int, default=8, help="images, both ends included (default 8)")
    i.add_argument("--method", choices=("slerp", "lerp"), default="slerp")
    i.add_argument("--label", type=int, help="class label (conditional models)")
    i.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="a .gif (an animation) or .png/.jpg/.webp (the images side by side)",
    )

    sub.add_parser("styles", help="list the style presets")
    sub.add_parser("info", help="the models being served (JSON)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Atelier(args.url, timeout=args.timeout, api_key=args.api_key or "") as atelier:
            return run(atelier, args)
    except AtelierError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an input file that cannot be read, an output that cannot be written
        print(f"error: {e}", file=sys.stderr)
        return 1


def run(atelier: Atelier, args: argparse.Namespace) -> int:
    if args.command == "stylize":
        if not args.style and not args.style_image:
            raise SystemExit("error: give --style NAME (see `styles`) and/or --style-image FILE")
        image = atelier.stylize(
            args.content,
            style=args.style_image or None,
            style_name=args.style or None,
            weights=args.weights,
            strength=args.strength,
            preserve_color=args.preserve_color,
            max_side=args.max_side,
            format=output_format(args.out, gif=True),
        )
        save(image, args.out, gif=True)
        print(f"{args.out}: {image.width}x{image.height}, {image.info['style']}")
    elif args.command == "sample":
        image = atelier.sample_grid(
            n=args.n,
            seed=args.seed,
            label=args.label,
            truncation=args.truncation,
            format=output_format(args.out),
            style_name=args.style or None,
            style=args.style_image or None,
            weights=args.weights,
            strength=args.strength,
        )
        save(image, args.out)
        painted = f", {image.info['style']}" if image.info.get("style") else ""
        print(f"{args.out}: {args.n} images, seed {image.info['seed']}{painted}")
    elif args.command == "interpolate":
        images = atelier.interpolate(args.seed_a, args.seed_b, steps=args.steps, method=args.method, label=args.label)
        if args.out.suffix.lower() == ".gif":
            frames = [im.convert("RGB") for im in images + images[-2:0:-1]]  # there and back
            frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=120, loop=0)
        else:
            output_format(args.out)
            strip = Image.new(images[0].mode, (sum(im.width for im in images), images[0].height))
            for k, im in enumerate(images):
                strip.paste(im, (k * im.width, 0))
            save(strip, args.out)
        print(f"{args.out}: {len(images)} images from seed {args.seed_a} to {args.seed_b}")
    elif args.command == "styles":
        for style in atelier.styles():
            print(f"{style.name:<24} {style.credit or style.source}")
    else:
        print(json.dumps(atelier.info().raw, indent=2))
    return 0


def save(image: Image.Image, path: Path, gif: bool = False) -> None:
    """Write atomically (a temporary name, then a rename): an interrupted run leaves no half file.
    An animation is written with all its frames (their durations and the loop count as received)."""
    fmt = output_format(path, gif)
    if fmt == "jpeg":
        image = image.convert("RGB")
    tmp = path.with_name(f".{path.name}.tmp")
    options = {"quality": 95} if fmt in ("jpeg", "webp") else {}
    if getattr(image, "n_frames", 1) > 1:
        options["save_all"] = True
    image.save(tmp, format=fmt.upper(), **options)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
