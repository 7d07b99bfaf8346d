"""ASGI middleware that guards request bodies before BentoML parses them.

- An API call (POST) with an empty body is refused with 400: BentoML would otherwise read it as
  ``{}`` and silently serve the defaults.
- A body larger than its path's limit is refused with 413 as soon as its Content-Length (or,
  when streamed, its running size) says so, before it is stored anywhere.
Errors use the same JSON shape as every other client error (service/errors.py).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from service.errors import error_payload

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyGuard:
    def __init__(self, app: ASGIApp, limits: dict[str, int]):
        self.app = app
        self.limits = limits  # path -> largest body accepted, in bytes

    async def __call__(self, scope: Scope, receive, send) -> None:
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, 413, "body", f"request body is {_size(int(length))}; the limit is {_size(limit)}")
            return
        # Read the whole body (bounded), then replay it to the app.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reject(send, 413, "body", f"request body exceeds the limit of {_size(limit)}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip():
            await _reject(send, 400, "body", "request body is empty: send a JSON object (or a multipart form for stylize)")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(send, status: int, field: str, message: str) -> None:
    payload = json.dumps(error_payload(field, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"
