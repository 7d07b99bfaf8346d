"""What each of a GAN run's two feature spaces is sensitive to (docs/gan.md, "Where the independent
space's gap is").

    python tools/gan_space_probe.py runs/gan/RUN [--sets 4]

Scores the run's EMA generator on ``--sets`` sets of the evaluation seeds, as the run's own measures
do, as it is and after changes that a person would not see (its background snapped to black, each
digit moved to the whole pixel nearest the real digits' centre of mass); then the real held-out
digits, which are the baseline (1.00x by definition), after small changes of the same kind: moved
by one pixel, moved to whole pixels of the centre, grain, a blur, softer ink. Each row gives FID as
a multiple of the space's real-vs-real baseline and recall, in FID-LeNet and in the independent
space, and the pixel statistics behind it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.gan.data import load_dataset  # noqa: E402
from training.gan.evaluate import evaluation_samples, independent_reference, quality_reference  # noqa: E402
from training.gan.functions import as_float  # noqa: E402
from training.gan.options import EVAL_SEED, JUDGE_SPLIT_SEED, stored_options  # noqa: E402
from training.gan.train import build_models  # noqa: E402
from training.runs import CHECKPOINT, load_checkpoint  # noqa: E402

Transform = Callable[[torch.Tensor], torch.Tensor]


def centre_of_mass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ink-weighted (row, column) centre, images (N, 1, H, W) in [-1, 1]."""
    ink = (x[:, 0] + 1) / 2
    mass = ink.sum((1, 2)).clamp_min(1e-6)
    rows, cols = torch.arange(ink.shape[1], dtype=ink.dtype), torch.arange(ink.shape[2], dtype=ink.dtype)
    return (ink.sum(2) * rows).sum(1) / mass, (ink.sum(1) * cols).sum(1) / mass


def to_whole_pixels(target: tuple[float, float]) -> Transform:
    """Each image rolled by the whole pixels that bring its centre of mass nearest ``target``."""

    def move(x: torch.Tensor) -> torch.Tensor:
        cy, cx = centre_of_mass(x)
        out = x.clone()
        for i in range(len(x)):
            shift = (int(round(target[0] - float(cy[i]))), int(round(target[1] - float(cx[i]))))
            out[i] = torch.roll(x[i], shift, dims=(-2, -1))
        return out

    return move


def blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k[None, None])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished GAN run folder (a class-conditional one)")
    p.add_argument("--sets", type=int, default=4, help="sets of the evaluation seeds the generator is scored on")
    args = p.parse_args(argv)
    checkpoint = load_checkpoint(args.run / CHECKPOINT)
    o = stored_options(checkpoint)
    if not o.num_classes:
        raise SystemExit("the probe needs a class-conditional run (its spaces are classifiers')")
    device = torch.device("cpu")
    data = load_dataset(o.dataset, o.image_size, o.channels)
    g, _ = build_models(o.to_dict())
    g.load_state_dict(checkpoint["generator_ema"])
    g.eval()
    spaces = [
        quality_reference(o, args.run, data, device, print),
        independent_reference(o, args.run, data, device, print),
    ]
    n = len(data.held_out)
    sets = [evaluation_samples(o, g, n, device, EVAL_SEED + k * n) for k in range(args.sets)]
    real = as_float(data.held_out.images)
    generated = torch.cat([images for images, _ in sets])
    cy, cx = centre_of_mass(real)
    gy, gx = centre_of_mass(generated)
    print(
        f"centre of mass (row, column), mean ± sd: real {cy.mean():.2f} ± {cy.std():.2f}, {cx.mean():.2f} ± "
        f"{cx.std():.2f}; generated {gy.mean():.2f} ± {gy.std():.2f}, {gx.mean():.2f} ± {gx.std():.2f}"
    )
    black = [float((x <= -0.999).float().mean()) for x in (real, generated)]
    print(f"pixels at black: real {black[0]:.3f}, generated {black[1]:.3f}")
    centre = (float(cy.mean()), float(cx.mean()))
    print(f"{'':60s} {'FID-LeNet':>20s} {'independent':>20s}")

    def line(name: str, scored: list[dict]) -> None:
        cells = [
            f"{s['fid'] / space.baseline['fid']:5.2f}x  recall {s['recall']:.3f}" for s, space in zip(scored, spaces)
        ]
        print(f"{name:60s} {cells[0]:>20s} {cells[1]:>20s}", flush=True)

    def generated_row(name: str, change: Transform) -> None:
        changed = [(change(x), labels) for x, labels in sets]  # once: both spaces score the same images
        line(name, [space.merge([space.score(x, labels) for x, labels in changed]) for space in spaces])

    held_out = [as_float(split.held_out.images) for split in (data, data.resplit(JUDGE_SPLIT_SEED))]

    def real_row(name: str, change: Transform) -> None:
        """Each space's own held-out digits (its baseline's), changed."""
        line(f"real held-out, {name}", [space.score(change(x), None) for space, x in zip(spaces, held_out)])

    generated_row("generated", lambda x: x)
    generated_row("generated, background under -0.9 snapped to black", lambda x: torch.where(x < -0.9, -1.0, x))
    generated_row("generated, moved to whole pixels of the real centre", to_whole_pixels(centre))
    real_row("unchanged (the baseline)", lambda x: x)
    real_row("moved one pixel right", lambda x: torch.roll(x, 1, dims=-1))
    real_row("moved to whole pixels of their mean centre", to_whole_pixels(centre))
    noise = torch.Generator().manual_seed(0)
    real_row("grain of 0.02", lambda x: (x + 0.02 * torch.randn(x.shape, generator=noise).abs()).clamp(-1, 1))
    real_row("a 3x3 binomial blur", blur)
    real_row("softer ink (gamma 1.5)", lambda x: ((x + 1) / 2) ** 1.5 * 2 - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
