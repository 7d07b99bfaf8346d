"""The VGG network as a pure ``nn.Module`` (no I/O), and the factorisation of one of its convolutions.

``VGGFeatures`` is torchvision's ``vgg.features`` with the same indices (so a torchvision state
dict's ``features.N.weight`` keys load directly), truncated after ``last_layer``, with the input
normalisation of its weight source held inside as buffers: callers always pass RGB in [0, 1].
Its weights come from ``training.vgg.load_vgg``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# torchvision's cfgs "D" and "E": conv widths, "M" = 2x2 max-pool.
VGG_ARCHS: dict[str, list] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# torchvision's ImageNet input normalisation: the default, and that of state-dict files
IMAGENET_NORM = {"input": "RGB in [0,1]", "scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def layer_names(arch: str) -> list[str]:
    """Names of torchvision ``features`` indices: conv1_1, relu1_1, conv1_2, relu1_2, pool1, ..."""
    names, block, conv = [], 1, 0
    for v in _cfg(arch):
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def _cfg(arch: str) -> list:
    if arch not in VGG_ARCHS:
        raise ValueError(f"unknown VGG arch {arch!r}; expected one of {sorted(VGG_ARCHS)}")
    return VGG_ARCHS[arch]


class VGGFeatures(nn.Module):
    """VGG ``features`` up to ``last_layer``; input RGB [0, 1] of shape (N, 3, H, W).

    Each pool halves H and W (floor): relu1_* (N, 64, H, W), relu2_* (N, 128, H/2, W/2),
    relu3_* (N, 256, H/4, W/4), relu4_* (N, 512, H/8, W/8), relu5_* (N, 512, H/16, W/16).
    """

    def __init__(self, arch: str = "vgg19", last_layer: str = "relu4_1", normalization: dict | None = None):
        super().__init__()
        names = layer_names(arch)
        if last_layer not in names:
            raise ValueError(f"{arch} has no layer {last_layer!r}; choose from {names}")
        self.arch, self.last_layer = arch, last_layer
        self.names = names[: names.index(last_layer) + 1]
        norm = normalization or IMAGENET_NORM
        self.normalization = {
            "input": "RGB in [0,1]",
            "scale": float(norm["scale"]),
            "mean": [float(m) for m in norm["mean"]],
            "std": [float(s) for s in norm["std"]],
        }
        # x -> (x * scale - mean) / std, per RGB channel
        self.register_buffer("scale", torch.tensor(self.normalization["scale"]))
        self.register_buffer("mean", torch.tensor(self.normalization["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.normalization["std"]).view(1, 3, 1, 1))

        layers: list[nn.Module] = []
        in_ch = 3
        for v in _cfg(arch):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                # not inplace: a conv output may itself be a tap
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU()]
                in_ch = v
        self.features = nn.Sequential(*layers[: len(self.names)])

    def normalize(self, x: Tensor) -> Tensor:
        """RGB [0, 1] (N, 3, H, W) -> what ``features[0]`` reads: (x * scale - mean) / std per channel."""
        return (x * self.scale - self.mean) / self.std

    def forward(self, x: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Features at ``taps`` (default: ``[last_layer]``); stops after the deepest tap."""
        taps = [self.last_layer] if taps is None else list(taps)
        unknown = [t for t in taps if t not in self.names]
        if unknown:
            raise ValueError(f"unknown taps {unknown}; this {self.arch} stops at {self.last_layer}")
        wanted = {self.names.index(t): t for t in taps}
        out: dict[str, Tensor] = {}
        h = self.normalize(x)  # (N, 3, H, W)
        for i in range(max(wanted) + 1):
            h = self.features[i](h)
            if i in wanted:
                out[wanted[i]] = h
        return {t: out[t] for t in taps}


def factorize_conv(conv: nn.Conv2d, energy: float) -> tuple[nn.Module, int]:
    """``conv`` as a k x k convolution into r channels followed by a 1 x 1 one back to C_out: the
    truncated SVD of its weight seen as a C_out x (C_in k k) matrix (Denton et al. 2014, "Exploiting
    Linear Structure Within Convolutional Networks"). r is the fewest singular values whose squares
    keep ``energy`` of the total. Returns ``(module, r)``; the convolution itself, with r = C_out,
    when the pair would not save a fifth of its multiply-adds."""
    w = conv.weight.detach()
    c_out, c_in, kh, kw = w.shape
    u, s, vh = torch.linalg.svd(w.reshape(c_out, -1).double(), full_matrices=False)
    kept = torch.cumsum(s**2, 0) / (s**2).sum()
    rank = min(int((kept < energy).sum()) + 1, len(s))  # rounding may leave the total just under 1
    if rank * (c_in * kh * kw + c_out) > 0.8 * c_out * c_in * kh * kw:
        return conv, c_out
    first = nn.Conv2d(c_in, rank, (kh, kw), conv.stride, conv.padding, bias=False)
    second = nn.Conv2d(rank, c_out, 1)
    with torch.no_grad():
        first.weight.copy_(vh[:rank].reshape(rank, c_in, kh, kw))
        second.weight.copy_((u[:, :rank] * s[:rank]).reshape(c_out, rank, 1, 1))
        second.bias.copy_(conv.bias if conv.bias is not None else torch.zeros(c_out))
    pair = nn.Sequential(first, second).requires_grad_(conv.weight.requires_grad)
    return pair.train(conv.training), rank
