"""How styled and how faithful an output is, in a frozen network's feature space: the quality
report's measures (definitions in ``report.py``'s docstring and in ``report.json``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from training.style.functions import style_loss_gram

_TINY = 1e-30


class FeatureSpace:
    """A frozen network, the layers whose Gram matrices measure style and the layer that measures content."""

    def __init__(self, name: str, model, style_layers: Sequence[str], content_layer: str):
        self.name, self.model = name, model
        self.style_layers, self.content_layer = list(style_layers), content_layer

    def features(self, image: Tensor) -> dict[str, Tensor]:
        """The metric layers of ``image`` (1, 3, H, W) in [0, 1]."""
        with torch.no_grad():
            return self.model(image, list(dict.fromkeys([*self.style_layers, self.content_layer])))

    def metrics(self, out: dict[str, Tensor], content: dict[str, Tensor], style: dict[str, Tensor]) -> dict[str, float]:
        return {
            f"{self.name}_style": relative_style_distance(out, content, style, self.style_layers),
            f"{self.name}_content": relative_content_distance(out, content, self.content_layer),
        }


VGG_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
VGG_CONTENT_LAYER = "relu4_1"
EFFNET_STYLE_LAYERS = ("stage1", "stage2", "stage3", "stage4")
EFFNET_CONTENT_LAYER = "stage4"


def relative_style_distance(
    out: dict[str, Tensor], content: dict[str, Tensor], style: dict[str, Tensor], layers: Sequence[str]
) -> float:
    """Mean over ``layers`` of Gram-MSE(out, style) / Gram-MSE(content, style)."""
    ratios = []
    for layer in layers:
        d_out = float(style_loss_gram({layer: out[layer]}, {layer: style[layer]}))
        d_ref = float(style_loss_gram({layer: content[layer]}, {layer: style[layer]}))
        ratios.append(d_out / max(d_ref, _TINY))
    return float(np.mean(ratios))


def relative_content_distance(out: dict[str, Tensor], content: dict[str, Tensor], layer: str) -> float:
    """||f(out) - f(content)|| / ||f(content)|| at ``layer`` (same image size)."""
    o, c = out[layer], content[layer]
    return float(torch.linalg.vector_norm(o - c) / torch.linalg.vector_norm(c).clamp_min(_TINY))


def feature_spaces(vgg, device: torch.device) -> list[FeatureSpace]:
    from training.effnet import EffNetWeightsError, load_effnet

    try:
        effnet = load_effnet(device)
    except EffNetWeightsError as e:
        raise SystemExit(f"error: {e}") from e
    return [
        FeatureSpace("vgg", vgg, VGG_STYLE_LAYERS, VGG_CONTENT_LAYER),
        FeatureSpace("effnet", effnet, EFFNET_STYLE_LAYERS, EFFNET_CONTENT_LAYER),
    ]
