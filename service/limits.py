"""ASGI middleware that guards request bodies before BentoML parses them.

- An API call (POST) with an empty body is refused with 400: BentoML would otherwise read it as
  ``{}`` and silently serve the defaults.
- A body larger than its path's limit is refused with 413 as soon as its Content-Length (or,
  when streamed, its running size) says so, before it is stored anywhere.
- A body larger than its path's limit is refused with 413; a path that takes files has a larger
  limit for multipart bodies (``form_limits``) than for JSON.
- A field the endpoint does not know (a JSON key, or a form part's name) is refused with
  400 naming it, the closest accepted name and every accepted one: BentoML would otherwise drop
  it silently, and ``{"sed": 5}`` would answer with a random seed.
- A file field (``content``, ``style``) sent as text instead of a file is refused with 400:
  BentoML would otherwise take the text for a URL and download it, with no size limit, from the
  service's own network.
Errors use the same JSON shape as every other client error (service/errors.py).
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from service.errors import send_error

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        limits: dict[str, int],
        fields: dict[str, Iterable[str]] | None = None,
        may_be_empty: Iterable[str] = (),
        files: dict[str, Iterable[str]] | None = None,
        form_limits: dict[str, int] | None = None,
    ):
        self.app = app
        self.limits = limits  # path -> largest body accepted, in bytes
        self.form_limits = form_limits or {}  # path -> largest multipart body, where larger than limits[path]
        self.fields = {path: tuple(names) for path, names in (fields or {}).items()}  # path -> accepted fields
        self.files = {path: frozenset(names) for path, names in (files or {}).items()}  # path -> its file fields
        self.may_be_empty = set(may_be_empty)  # paths whose every field is optional (info, styles)

    async def __call__(self, scope: Scope, receive, send) -> None:
        path = scope.get("path", "")
        limit = self.limits.get(path) if scope["type"] == "http" and scope["method"] == "POST" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"")
        if path in self.form_limits and content_type.lower().startswith(b"multipart/form-data"):
            limit = self.form_limits[path]
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, 413, "body", f"request body is {_size(int(length))}; the limit is {_size(limit)}")
            return
        body = await _read_body(receive, send, limit)
        if body is None:
            return
        problem = self._problem(path, body, content_type)
        if problem is not None:
            await _reject(send, 400, *problem)
            return
        sent = False

        async def replay() -> Message:  # the body, read once, handed to the app
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _problem(self, path: str, body: bytes, content_type: bytes) -> tuple[str, str] | None:
        """(field, message) for a body the endpoint must refuse: empty, an unknown field, text in a file field."""
        if not body.strip():
            if path in self.may_be_empty:
                return None
            return "body", "request body is empty: send a JSON object (or a multipart form for stylize)"
        if path not in self.fields:
            return None
        parts = form_parts(body, content_type)
        unknown = [name for name, _ in parts if name not in self.fields[path]]
        if unknown:
            return unknown[0], unknown_field_message(unknown[0], self.fields[path])
        if content_type.lower().startswith((b"multipart/form-data", b"application/x-www-form-urlencoded")):
            text = [name for name, is_file in parts if name in self.files.get(path, ()) and not is_file]
            if text:
                return text[0], (
                    f"{text[0]!r} must be an uploaded file (a multipart part with a filename); "
                    "URLs and text are not fetched"
                )
        return None


async def _read_body(receive, send, limit: int) -> bytes | None:
    """The whole body, at most ``limit`` bytes; None when it was refused (413) or the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _reject(send, 413, "body", f"request body exceeds the limit of {_size(limit)}")
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def form_parts(body: bytes, content_type: bytes) -> list[tuple[str, bool]]:
    """The fields a request carries, each with whether it came as a file: a JSON object's keys, a
    multipart form's parts (a file is a part with a filename) or a url-encoded form's keys.
    Anything else (malformed JSON, a non-object) gives none: BentoML's own checks answer those."""
    kind = content_type.lower()
    boundary = re.search(rb'boundary="?([^";]+)"?', content_type)
    if kind.startswith(b"multipart/form-data") and boundary:
        delimiter = rb"--" + re.escape(boundary[1]) + rb"\r\n((?:[^\r\n]+\r\n)*)\r\n"
        parts = []
        for part_headers in re.findall(delimiter, body):
            disposition = re.search(rb"(?im)^content-disposition:([^\r\n]*)", part_headers)
            name = disposition and re.search(rb'(?:^|;)\s*name="([^"]*)"', disposition[1])
            if name:
                is_file = re.search(rb"(?i);\s*filename\*?=", disposition[1]) is not None
                parts.append((name[1].decode("utf-8", "replace"), is_file))
        return parts
    if kind.startswith(b"application/x-www-form-urlencoded"):
        return [(name, False) for name, _ in urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True)]
    try:
        obj = json.loads(body)
    except ValueError:
        return []
    return [(str(k), False) for k in obj] if isinstance(obj, dict) else []


def unknown_field_message(name: str, accepted: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(accepted) if accepted else "none (send an empty body or {})"
    return f"unknown field {name!r}; {hint}accepted fields: {listed}"


async def _reject(send, status: int, field: str, message: str) -> None:
    await send_error(send, status, field, message, {"Connection": "close"})


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"
