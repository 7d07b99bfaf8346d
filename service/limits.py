"""ASGI middleware that guards request bodies before BentoML parses them.

- An API call (POST) with an empty body is refused with 400: BentoML would otherwise read it as
  ``{}`` and silently serve the defaults.
- A body larger than its path's limit is refused with 413 as soon as its Content-Length (or,
  when streamed, its running size) says so, before it is stored anywhere.
- A field the endpoint does not know (a JSON key, or a multipart part's name) is refused with
  400 naming it, the closest accepted name and every accepted one: BentoML would otherwise drop
  it silently, and ``{"sed": 5}`` would answer with a random seed.
Errors use the same JSON shape as every other client error (service/errors.py).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any, Awaitable, Callable

from service.errors import send_error

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyGuard:
    def __init__(self, app: ASGIApp, limits: dict[str, int], fields: dict[str, Iterable[str]] | None = None,
                 may_be_empty: Iterable[str] = ()):
        self.app = app
        self.limits = limits  # path -> largest body accepted, in bytes
        self.fields = {path: tuple(names) for path, names in (fields or {}).items()}  # path -> accepted fields
        self.may_be_empty = set(may_be_empty)  # paths whose every field is optional (info, styles)

    async def __call__(self, scope: Scope, receive, send) -> None:
        path = scope.get("path", "")
        limit = self.limits.get(path) if scope["type"] == "http" and scope["method"] == "POST" else None
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
            if path not in self.may_be_empty:
                await _reject(send, 400, "body", "request body is empty: send a JSON object (or a multipart form for stylize)")
                return
        elif path in self.fields:
            unknown = [n for n in field_names(body, headers.get(b"content-type", b"")) if n not in self.fields[path]]
            if unknown:
                await _reject(send, 400, unknown[0], unknown_field_message(unknown[0], self.fields[path]))
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def field_names(body: bytes, content_type: bytes) -> list[str]:
    """The field names a request carries: a JSON object's keys, or a multipart form's part names.
    Anything else (malformed JSON, a non-object) gives none: BentoML's own checks answer those."""
    boundary = re.search(rb'boundary="?([^";]+)"?', content_type)
    if content_type.lower().startswith(b"multipart/form-data") and boundary:
        delimiter = rb"--" + re.escape(boundary[1]) + rb"\r\n((?:[^\r\n]+\r\n)*)\r\n"
        names = []
        for part_headers in re.findall(delimiter, body):
            name = re.search(rb'(?im)^content-disposition:[^\r\n]*?\bname="([^"]*)"', part_headers)
            if name:
                names.append(name[1].decode("utf-8", "replace"))
        return list(dict.fromkeys(names))
    try:
        obj = json.loads(body)
    except ValueError:
        return []
    return [str(k) for k in obj] if isinstance(obj, dict) else []


def unknown_field_message(name: str, accepted: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(accepted) if accepted else "none (send an empty body or {})"
    return f"unknown field {name!r}; {hint}accepted fields: {listed}"


async def _reject(send, status: int, field: str, message: str) -> None:
    await send_error(send, status, field, message, {"Connection": "close"})


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"
