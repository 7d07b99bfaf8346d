"""The optimisation reference for style transfer (Gatys, Ecker & Bethge 2016).

Gradient descent on the image (through its logits, below) minimises

    content_weight * content + style_weight * style + tv_weight * tv

where ``content`` is the MSE of VGG features at one deep layer divided by the mean square of the
content's features there, ``style`` is the mean over the style layers of the MSE between Gram
matrices divided by the mean square of the style's Gram matrix at that layer, and ``tv`` is the
total variation of the image. Dividing each term by its target's own scale makes the weights
dimensionless, so one set of defaults serves VGG sources whose feature scales differ by orders of
magnitude (ImageNet VGG19 on [0, 1] input, HED VGG16 on 0-255 input) and no layer drowns the others.

The image is parametrised as ``sigmoid(z)`` and ``z`` is optimised, so pixels stay in (0, 1)
without clamping: clamping between L-BFGS steps corrupts its curvature history (measured: on a
mostly black style it blew up to a washed-out image while the sigmoid form converged).

Hundreds of VGG forward+backward passes per image make this the quality *reference*, not the
served path. ``stylize_by_optimisation`` is the importable core (the quality report reuses it);
``python -m training.style.reference --help`` is the command line.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from tqdm import tqdm

from training.runs import atomic_write_bytes, atomic_write_json, pick_device
from training.style.functions import content_loss, gram_matrix, style_loss_gram, total_variation
from training.vgg import SOURCES, VGGWeightsError, layer_names, load_vgg

DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.1}  # in logit space: image = sigmoid(z)
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
MIN_SIZE, MAX_SIZE = 16, 4096
DEFAULT_SIZE = 384
LOSS_KEYS = ("content", "style", "tv", "total")
_TINY = 1e-12  # floor for the normalising scales (a black image has zero features)
_EDGE = 1e-3  # the initial image is clamped to [_EDGE, 1 - _EDGE] before its logit


@dataclass(frozen=True)
class ReferenceSettings:
    """Everything that decides the result; written next to every output."""

    content_layer: str = "conv4_2"
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.5
    optimizer: str = "lbfgs"
    steps: int = 200
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    init: str = "content"
    seed: int = 0
    log_every: int = 10

    @property
    def resolved_lr(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    @property
    def taps(self) -> list[str]:
        return list(dict.fromkeys([self.content_layer, *self.style_layers]))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        known = layer_names("vgg19")  # vgg16's names are a subset; load_vgg checks the real arch
        for layer in self.taps:
            if layer not in known:
                raise ValueError(f"unknown VGG layer {layer!r}; use names like relu3_1, conv4_2")
        if not self.style_layers:
            raise ValueError("at least one style layer is needed")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.steps < 1 or self.log_every < 1:
            raise ValueError(f"steps and log_every must be >= 1, got {self.steps}, {self.log_every}")
        if not (math.isfinite(self.resolved_lr) and self.resolved_lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")

    def to_json(self) -> dict:
        return {**asdict(self), "style_layers": list(self.style_layers), "lr": self.resolved_lr}


def deepest_layer(layers: Sequence[str]) -> str:
    """The layer of ``layers`` that comes last in VGG (the ``last_layer`` to load up to)."""
    order = layer_names("vgg19")
    return max(layers, key=order.index)


# ----------------------------------------------------------------------------- images


def load_image(path: Path, long_side: int) -> Tensor:
    """Read an image file as RGB (EXIF orientation applied), resized -> (1, 3, H, W) in [0, 1]."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
    return image_to_tensor(img, long_side)


def image_to_tensor(image: Image.Image | np.ndarray, long_side: int | None) -> Tensor:
    """A PIL image or uint8 array (H, W) / (H, W, 3) -> (1, 3, H', W') float in [0, 1].

    With ``long_side`` the longer side becomes ``long_side`` and the aspect ratio is kept.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if long_side is not None:
        w, h = image.size
        scale = long_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    arr = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(img: Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL RGB image."""
    arr = img[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def save_image(img: Tensor, path: Path) -> None:
    """Write ``img`` (1, 3, H, W) atomically; the format follows the suffix (png, jpg, webp)."""
    buf = io.BytesIO()
    tensor_to_image(img).save(buf, format=OUTPUT_FORMATS[Path(path).suffix.lower()])
    atomic_write_bytes(Path(path), buf.getvalue())


# ----------------------------------------------------------------------------- optimisation


Objective = Callable[[Tensor], dict[str, Tensor]]


def gatys_objective(vgg, content: Tensor, style: Tensor, s: ReferenceSettings) -> Objective:
    """``image -> {content, style, tv, total}`` (scalar tensors) against fixed targets."""
    with torch.no_grad():
        content_target = vgg(content, [s.content_layer])[s.content_layer]
        style_targets = vgg(style, list(s.style_layers))
        style_scales = {k: gram_matrix(f).square().mean().clamp_min(_TINY) for k, f in style_targets.items()}
        content_scale = content_target.square().mean().clamp_min(_TINY)
    taps = s.taps

    def objective(image: Tensor) -> dict[str, Tensor]:
        feats = vgg(image, taps)
        c = content_loss(feats[s.content_layer], content_target) / content_scale
        per_layer = [style_loss_gram({k: feats[k]}, {k: style_targets[k]}) / style_scales[k] for k in s.style_layers]
        st = torch.stack(per_layer).mean()
        tv = total_variation(image)
        total = s.content_weight * c + s.style_weight * st + s.tv_weight * tv
        return {"content": c, "style": st, "tv": tv, "total": total}

    return objective


def initial_image(content: Tensor, s: ReferenceSettings) -> Tensor:
    """The starting image: a copy of the content, or uniform noise from ``s.seed``."""
    if s.init == "content":
        return content.detach().clone()
    g = torch.Generator().manual_seed(s.seed)
    return torch.rand(content.shape, generator=g).to(content.device, content.dtype)


def to_logits(image: Tensor) -> Tensor:
    """The optimised variable ``z`` with ``sigmoid(z) == image`` (pixels kept off exactly 0 and 1)."""
    return torch.logit(image.clamp(_EDGE, 1 - _EDGE))


def make_optimizer(z: Tensor, s: ReferenceSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam([z], lr=s.resolved_lr)
    # one L-BFGS iteration (one VGG forward+backward) per step; its history persists across steps
    return torch.optim.LBFGS([z], lr=s.resolved_lr, max_iter=1, history_size=50)


def _step(opt: torch.optim.Optimizer, z: Tensor, objective: Objective) -> dict[str, float]:
    """One optimiser step on ``z``; returns the losses of the image it started from."""
    seen: dict[str, float] = {}

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        losses = objective(torch.sigmoid(z))
        losses["total"].backward()
        if not seen:
            seen.update({k: float(v.detach()) for k, v in losses.items()})
        return losses["total"]

    opt.step(closure)
    return seen


def _record(step: int, losses: dict[str, float]) -> dict[str, float]:
    return {"step": step, **{k: losses[k] for k in LOSS_KEYS}}


def stylize_by_optimisation(
    vgg, content: Tensor, style: Tensor, settings: ReferenceSettings, progress: bool = True
) -> tuple[Tensor, list[dict[str, float]]]:
    """Repaint ``content`` (1, 3, H, W) in the style of ``style`` (1, 3, h, w), both in [0, 1].

    ``vgg`` is a frozen ``VGGFeatures`` that reaches every layer in ``settings``; the work runs on
    ``content``'s device. Returns the image (1, 3, H, W) in [0, 1] and the loss history: one
    record (``step``, content, style, tv, total) at step 0, every ``log_every`` steps, and the
    final image's losses as the last record (``step == settings.steps``).
    """
    settings.validate()
    style = style.to(content.device, content.dtype)
    objective = gatys_objective(vgg, content, style, settings)
    z = to_logits(initial_image(content, settings)).requires_grad_(True)
    opt = make_optimizer(z, settings)
    history = []
    bar = tqdm(range(settings.steps), desc="gatys", unit="step", disable=not progress, dynamic_ncols=True, leave=False)
    for i in bar:
        losses = _step(opt, z, objective)
        if i % settings.log_every == 0:
            history.append(_record(i, losses))
            bar.set_postfix({k: f"{losses[k]:.3g}" for k in LOSS_KEYS})
    with torch.no_grad():
        image = torch.sigmoid(z)
        final = {k: float(v) for k, v in objective(image).items()}
    history.append(_record(settings.steps, final))
    return image.detach(), history


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    d = ReferenceSettings()
    p = argparse.ArgumentParser(
        prog="python -m training.style.reference",
        description="Style transfer by optimisation (Gatys et al.), the quality reference. "
        "Writes the image and a JSON of settings, losses and timing beside it.",
    )
    p.add_argument("--content", type=Path, required=True, help="content photo")
    p.add_argument("--style", type=Path, required=True, help="style image")
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        help="result image (.png, .jpg, .webp); a .json of the same name goes beside it",
    )
    p.add_argument(
        "--vgg",
        default="auto",
        help=f"VGG weights: one of {', '.join(SOURCES)} ('random' is for tests only) "
        "or a torchvision state-dict path (default: auto)",
    )
    p.add_argument(
        "--content-layer", default=d.content_layer, help=f"deep layer of the content loss (default: {d.content_layer})"
    )
    p.add_argument(
        "--style-layers",
        default=",".join(d.style_layers),
        help=f"comma-separated layers of the Gram-matrix style loss (default: {','.join(d.style_layers)})",
    )
    p.add_argument(
        "--content-weight",
        type=float,
        default=d.content_weight,
        help=f"weight of the content loss, a relative MSE (default: {d.content_weight})",
    )
    p.add_argument(
        "--style-weight",
        type=float,
        default=d.style_weight,
        help=f"weight of the style loss, the mean relative Gram MSE over the layers (default: {d.style_weight})",
    )
    p.add_argument(
        "--tv-weight",
        type=float,
        default=d.tv_weight,
        help=f"weight of the total-variation smoothness loss (default: {d.tv_weight})",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"optimiser (default: {d.optimizer})")
    p.add_argument(
        "--steps",
        type=int,
        default=d.steps,
        help=f"optimiser steps, one VGG forward+backward each (default: {d.steps})",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: " + ", ".join(f"{v} for {k}" for k, v in DEFAULT_LR.items()) + ")",
    )
    p.add_argument("--init", choices=INITS, default=d.init, help=f"starting image (default: {d.init})")
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"long side of the output in pixels, aspect ratio kept "
        f"(default: {DEFAULT_SIZE}; 256 takes roughly 1 s a step on 2 CPU cores)",
    )
    p.add_argument(
        "--style-size", type=int, default=None, help="long side the style image is resized to (default: --size)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the --init noise image (default: {d.seed})")
    p.add_argument(
        "--log-every", type=int, default=d.log_every, help=f"record the losses every N steps (default: {d.log_every})"
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: auto)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate the flags and read the images, then stop before any VGG work"
    )
    return p


def settings_from_args(args: argparse.Namespace) -> ReferenceSettings:
    layers = tuple(x.strip() for x in args.style_layers.split(",") if x.strip())
    return ReferenceSettings(
        content_layer=args.content_layer.strip(),
        style_layers=layers,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        optimizer=args.optimizer,
        steps=args.steps,
        lr=args.lr,
        init=args.init,
        seed=args.seed,
        log_every=args.log_every,
    )


def validate_args(args: argparse.Namespace) -> str | None:
    """The first problem with the command line (other than settings), or None."""
    for flag, path in (("--content", args.content), ("--style", args.style)):
        if not path.is_file():
            return f"{flag} {path}: no such file"
    if args.output.suffix.lower() not in OUTPUT_FORMATS:
        return f"--output {args.output}: suffix must be one of {sorted(OUTPUT_FORMATS)}"
    if args.output.exists() and args.output.is_dir():
        return f"--output {args.output} is a directory"
    for flag, size in (("--size", args.size), ("--style-size", args.style_size)):
        if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
            return f"{flag} must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}"
    if args.vgg not in SOURCES and not Path(args.vgg).expanduser().is_file():
        return f"--vgg {args.vgg!r}: not one of {', '.join(SOURCES)} and not a file"
    if args.device != "auto":
        try:
            torch.device(args.device)
        except RuntimeError as e:
            return f"--device {args.device!r}: {e}"
    return None


def _read_images(args) -> tuple[Tensor, Tensor]:
    try:
        content = load_image(args.content, args.size)
        style = load_image(args.style, args.style_size or args.size)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read image: {e}") from e
    return content, style


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, ReferenceSettings]:
    """Parse and validate the command line; exits with status 2 and a message on a bad flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    problem = validate_args(args)
    try:
        settings.validate()
    except ValueError as e:
        problem = problem or str(e)
    if problem:
        parser.error(problem)
    return args, settings


def result_record(
    args,
    settings: ReferenceSettings,
    info: dict,
    device: torch.device,
    shapes: dict[str, list[int]],
    seconds: float,
    history: list[dict],
) -> dict:
    """The JSON written beside the output image."""
    return {
        "content": str(args.content),
        "style": str(args.style),
        "output": str(args.output),
        **shapes,
        "settings": settings.to_json(),
        "vgg": info,
        "device": str(device),
        "time_s": round(seconds, 3),
        "seconds_per_step": round(seconds / settings.steps, 4),
        "final": {k: history[-1][k] for k in LOSS_KEYS},
        "history": history,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = parse_args(argv)
    device = pick_device(args.device)
    content, style = _read_images(args)
    print(
        f"content {tuple(content.shape[2:])} style {tuple(style.shape[2:])} settings {json.dumps(settings.to_json())}"
    )
    if args.dry_run:
        print("dry run: flags and images are valid; no VGG work done")
        return 0

    try:
        vgg, info = load_vgg(args.vgg, last_layer=deepest_layer(settings.taps))
    except VGGWeightsError as e:
        raise SystemExit(f"error: {e}") from e
    if info["random_weights"]:
        print("WARNING: random VGG weights: the result shows no real style transfer")
    start = time.perf_counter()
    image, history = stylize_by_optimisation(vgg.to(device), content.to(device), style.to(device), settings)
    seconds = time.perf_counter() - start

    save_image(image, args.output)
    shapes = {"output_size_hw": list(image.shape[2:]), "style_size_hw": list(style.shape[2:])}
    record = result_record(args, settings, info, device, shapes, seconds, history)
    atomic_write_json(args.output.with_suffix(".json"), record)
    print(
        f"wrote {args.output} ({seconds:.1f} s, {seconds / settings.steps:.3f} s/step); "
        f"final losses " + ", ".join(f"{k} {history[-1][k]:.4g}" for k in LOSS_KEYS)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
