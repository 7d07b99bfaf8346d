"""One training step of the reconstruction decoders: their losses against the frozen VGG, the
module that distributed runs wrap, the learning-rate schedule and the Adam step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.style.functions import content_loss, psnr
from training.style.options import StyleOptions


def compute_losses(vgg: nn.Module, decoders: nn.ModuleDict, images: Tensor, feature_weight: float) -> dict[str, Tensor]:
    """Reconstruction losses of every level's decoder on ``images`` (N, 3, H, W) in [0, 1].

    Per level: MSE of the pixels + ``feature_weight`` x MSE of the level's features (scaled by the
    decoder's ``input_scale`` squared, so every level's feature term is of unit scale). Also the
    PSNR of each reconstruction (dB, a batch mean, no gradient).
    """
    levels = list(decoders)
    with torch.no_grad():
        targets = vgg(images, levels)
    out: dict[str, Tensor] = {}
    total = None
    for level in levels:
        decoder = decoders[level]
        recon = decoder(targets[level])
        pixel = content_loss(recon.float(), images.float())
        feat = vgg(recon, [level])[level]
        feature = content_loss(feat.float(), targets[level].float()) * decoder.input_scale**2
        loss = pixel + feature_weight * feature
        total = loss if total is None else total + loss
        out[f"pixel_{level}"], out[f"feature_{level}"] = pixel, feature
        out[f"psnr_{level}"] = psnr(recon.detach().clamp(0, 1), images).mean()
    out["loss"] = total
    return out


def lr_at(opt: StyleOptions, step: int) -> float:
    return opt.lr / (1.0 + opt.lr_decay * step)


class Reconstruction(nn.Module):
    """The frozen VGG and the decoders as one module whose forward is ``compute_losses``: what
    DistributedDataParallel wraps in a distributed run (it averages the decoders' gradients)."""

    def __init__(self, vgg: nn.Module, decoders: nn.ModuleDict, feature_weight: float):
        super().__init__()
        self.vgg, self.decoders, self.feature_weight = vgg, decoders, feature_weight

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return compute_losses(self.vgg, self.decoders, images, self.feature_weight)


def train_step(model: nn.Module, optimizer, images, opt, step, autocast) -> dict[str, Tensor]:
    """One Adam step on a batch of images; returns the losses, detached (on the device: reading
    them is a host synchronisation, left to the logging interval)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(opt, step)
    with autocast():
        losses = model(images)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return {k: v.detach() for k, v in losses.items()}
