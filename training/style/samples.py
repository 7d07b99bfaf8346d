"""The style trainer's sample sheets: fixed held-in content x style pictures through the
cascade, written every ``--sample-every`` steps (``samples/step_NNNNNN.png``, ``samples.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.imaging import save_png, to_uint8
from training.style.data import ImageSource, bundled_style_images, content_source, load_fixed, pick_evenly
from training.style.levels import levels_up_to
from training.style.model import StyleEncoder

FIXED_CONTENT = ("chelsea", "astronaut", "coffee")
FIXED_STYLE = ("wheat_field", "pebbles", "chevrons")
SHEET_SIZE = 3


def fixed_samples(opt: dict[str, Any], vgg: nn.Module, device: torch.device, multiple: int):
    """Fixed content pictures and style statistics for the sample sheet (computed once); the
    pictures' sides are multiples of ``multiple`` (the sheet's cascade's ``size_multiple``)."""
    layer, side = opt["encoder_layer"], opt["sample_side"]
    contents = content_source(opt["content_dir"] and Path(opt["content_dir"]))
    styles = ImageSource.from_arrays(bundled_style_images())
    content_imgs = load_fixed(contents, pick_evenly(contents, SHEET_SIZE, FIXED_CONTENT), side, multiple)
    style_imgs = load_fixed(styles, pick_evenly(styles, SHEET_SIZE, FIXED_STYLE), side, multiple)
    levels = levels_up_to(layer)
    with torch.no_grad():
        encoder = StyleEncoder(vgg, levels)
        style_stats = [list(encoder(s.to(device))) for s in style_imgs]
    return {"content": content_imgs, "style": style_imgs, "style_stats": style_stats}


def render_sheet(cascade: nn.Module, fixed: dict[str, Any], cell: int) -> Tensor:
    """(3, (1+k)*cell, (2+k)*cell) in [0,1]: style images on the top row, content on the left
    column, then the decoders' reconstruction (strength 0), then one column per style."""
    rows = [[_blank(cell), _blank(cell)] + [_fit(s[0], cell) for s in fixed["style"]]]
    with torch.no_grad():
        for img in fixed["content"]:
            x = img.to(fixed["style_stats"][0][0].device)
            zero, one = torch.zeros(1, device=x.device), torch.ones(1, device=x.device)
            row = [_fit(img[0], cell), _fit(cascade(x, zero, *fixed["style_stats"][0])[0], cell)]
            for stats in fixed["style_stats"]:
                row.append(_fit(cascade(x, one, *stats)[0].float().cpu(), cell))
            rows.append(row)
    return torch.cat([torch.cat(r, dim=2) for r in rows], dim=1)


def _fit(img: Tensor, cell: int) -> Tensor:
    """(3, h, w) -> (3, cell, cell): scaled to fit, centred on white."""
    h, w = img.shape[-2:]
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = torch.nn.functional.interpolate(
        img[None].cpu(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )[0]
    out = torch.ones(3, cell, cell)
    top, left = (cell - nh) // 2, (cell - nw) // 2
    out[:, top : top + nh, left : left + nw] = img.clamp(0, 1)
    return out


def _blank(cell: int) -> Tensor:
    return torch.ones(3, cell, cell)


def write_samples(run_dir: Path, step: int, cascade: nn.Module, fixed: dict[str, Any], cell: int) -> None:
    was_training = cascade.training
    cascade.eval()
    sheet = render_sheet(cascade, fixed, cell)
    cascade.train(was_training)
    pixels = to_uint8(sheet[None], value_range=(0.0, 1.0))[0]
    save_png(pixels, run_dir / "samples" / f"step_{step:06d}.png")
    save_png(pixels, run_dir / "samples.png")
