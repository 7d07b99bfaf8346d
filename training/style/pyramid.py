"""Image-space pieces of the stylizer: the Gaussian and Laplacian pyramids, bicubic enlarging as a
convolution, and the photo's shading kept under painted colours. Pure functions of (N, C, H, W) tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from training.style.functions import mean_std

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B


def half_size(image: Tensor) -> Tensor:
    """One Gaussian-pyramid step: the 4x4 binomial blur ([1, 3, 3, 1] / 8 each way, mirrored at the
    edges) then every second pixel; (N, C, H, W) with even H, W -> (N, C, H/2, W/2)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=image.dtype, device=image.device) / 8
    c = image.shape[1]
    kernel = torch.outer(taps, taps).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), kernel, stride=2, groups=c)


def laplacian_pyramid(image: Tensor, scales: Sequence[int], stage: Callable[[Tensor, int], Tensor]) -> Tensor:
    """``stage(x, scale)`` applied at each of ``scales`` (decreasing powers of two), smallest first:
    on the image shrunk ``scales[0]`` times (Gaussian pyramid, ``half_size``), then on its output
    enlarged (``enlarge``) to the next scale plus the detail the smaller copy lacked (the image's
    Laplacian band between the two scales), and so on; the last output is brought to full size the
    same way. With ``stage`` the identity, the image comes back (up to clamping to [0, 1])."""
    shrunk = {1: image}  # scale -> the image shrunk that many times
    for k in range(1, scales[0].bit_length()):
        shrunk[2**k] = half_size(shrunk[2 ** (k - 1)])
    x = shrunk[scales[0]]
    for previous, k in zip(scales, [*scales[1:], 1]):
        x = stage(x, previous)
        if k != previous:  # enlarge(x) + (shrunk[k] - enlarge(shrunk[previous])), one enlargement
            x = (enlarge(x - shrunk[previous], previous // k) + shrunk[k]).clamp(0.0, 1.0)
    return x


def luma(image: Tensor) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma (Rec. 601 weights)."""
    weights = torch.tensor(LUMA, dtype=image.dtype, device=image.device).reshape(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True)


def smooth(image: Tensor, radius: int) -> Tensor:
    """Two box filters of side 2 * radius + 1 (edges replicated, so any size works): a tent-like
    low-pass that keeps what varies over more than about ``2 * radius`` pixels."""
    side = 2 * radius + 1
    for _ in range(2):
        image = F.avg_pool2d(F.pad(image, (radius,) * 4, mode="replicate"), side, stride=1)
    return image


def keep_shading(painted: Tensor, photo: Tensor, radius: int) -> Tensor:
    """``painted`` with ``photo``'s large-scale light and dark: the photo's luma, given the painted
    image's mean and spread, replaces the painted image's luma above the ``smooth(radius)`` scale.
    The change is added to all three channels, so the painted colours' differences (their hue)
    stay, and so does the painted image's fine texture. Images (N, 3, H, W) of one size."""

    def spread(y: Tensor) -> tuple[Tensor, Tensor]:  # mean and std of (N, 1, H, W), as (N, 1, 1, 1)
        mean, std = mean_std(y)
        return mean[..., None, None], std[..., None, None]

    y_photo, y_painted = luma(photo), luma(painted)
    (m_photo, s_photo), (m_painted, s_painted) = spread(y_photo), spread(y_painted)
    target = (y_photo - m_photo) / s_photo * s_painted + m_painted
    return painted + smooth(target - y_painted, radius)


# Bicubic interpolation (a = -0.75, PyTorch's and ONNX Runtime's) at twice the size, as a 5x5 convolution
# per output phase: even rows and columns sit 1/4 pixel before a source pixel, odd ones 1/4 after.
_CUBIC_EVEN = (-0.03515625, 0.26171875, 0.87890625, -0.10546875, 0.0)  # taps i-2 .. i+2
_CUBIC_ODD = (0.0, -0.10546875, 0.87890625, 0.26171875, -0.03515625)


def enlarge(image: Tensor, factor: int) -> Tensor:
    """(N, C, H, W) -> (N, C, factor H, factor W) by ``factor``'s log2 bicubic doublings, each equal to
    ``F.interpolate(scale_factor=2, mode="bicubic")`` (edges replicated) but a convolution and a
    pixel shuffle: ONNX Runtime's CPU cubic Resize took a third of the stylizer's time."""
    taps = [torch.tensor(t, dtype=image.dtype, device=image.device) for t in (_CUBIC_EVEN, _CUBIC_ODD)]
    phases = torch.stack([torch.outer(taps[row], taps[col]) for row in (0, 1) for col in (0, 1)])  # (4, 5, 5)
    c = image.shape[1]
    weight = phases.repeat(c, 1, 1)[:, None]  # (4C, 1, 5, 5): channel i's four phases at 4i..4i+3
    for _ in range(factor.bit_length() - 1):
        image = F.pixel_shuffle(F.conv2d(F.pad(image, (2, 2, 2, 2), mode="replicate"), weight, groups=c), 2)
    return image
