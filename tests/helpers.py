"""Helpers the HTTP tests share: requests to a real server, and waiting on it."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import requests
from PIL import Image

from bench import hostile_images as hi
from bench.pipeline import Server
from bench.soak import photo

SLOW = photo(1024, 768)  # about 6 s on the test model on 2 AVX2 cores, 1.8 s with AVX-512: caught in flight


def post_stylize(server: Server, content: bytes, timeout: float = 120, **fields) -> requests.Response:
    return requests.post(
        f"{server.url}/stylize",
        files={"content": ("c.jpg", content)},
        data={"style_name": "wheat_field", **{k: str(v) for k, v in fields.items()}},
        timeout=timeout,
    )


def in_background(fn, *args, **kwargs) -> dict:
    """Run ``fn`` on a thread; the returned dict gets its "result" (or "error") and a "done" event."""
    box: dict = {"done": threading.Event()}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 — reported to the test
            box["error"] = e
        box["done"].set()

    threading.Thread(target=target, daemon=True).start()
    return box


def queue_state(server: Server) -> dict:
    return requests.post(f"{server.url}/info", json={}, timeout=30).json()["stylize_queue"]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def post(server, endpoint, payload=None, **kwargs):
    return requests.post(f"{server.url}/{endpoint}", json=payload, timeout=60, **kwargs)


def stylize(
    server, content: bytes | None, style: bytes | list[bytes] | None = None, extra_file: bool = False, **fields
):
    files = [("styel", ("typo.png", hi.png(), "image/png"))] if extra_file else []
    if content is not None:
        files.append(("content", ("content.bin", content, "application/octet-stream")))
    for i, data in enumerate([style] if isinstance(style, bytes) else style or []):
        files.append(("style", (f"style{i}.bin", data, "application/octet-stream")))
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
    return requests.post(f"{server.url}/stylize", files=files or None, data=data, timeout=120)


def image_of(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
