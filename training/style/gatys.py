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
``python -m training.style.reference --help`` (``reference.py``) is the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from training.style.functions import content_loss, gram_matrix, style_loss_gram, total_variation
from training.vgg_net import layer_names

DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.1}  # in logit space: image = sigmoid(z)
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
