"""ASGI middleware that guards request bodies before BentoML parses them.

- **Admission before buffering**: a body is read only once its size (its Content-Length, or the
  path's limit when it is streamed) fits in the upload budget (``ATELIER_UPLOAD_BUDGET_MB``) next
  to the bodies already held; otherwise 429 with ``Retry-After`` at once, the body read and dropped
  but never stored. A body is counted twice (this buffer, and the endpoint's copy of its files)
  until its request ends.
- A body larger than its path's limit is refused with 413 as soon as its Content-Length (or,
  when streamed, its running size) says so; a path that takes files has a larger limit for
  multipart bodies (``form_limits``) than for JSON.
- An API call (POST) with an empty body is refused with 400: BentoML would otherwise read it as
  ``{}`` and silently serve the defaults.
- A malformed multipart body (no boundary, a part without headers or without a name, no closing
  delimiter, a text field over 1 MB) is refused with 400 saying what is wrong: BentoML's parser
  would answer 500.
- A field the endpoint does not know (a JSON key, or a form part's name) is refused with 400
  naming it, the closest accepted name and every accepted one: BentoML would otherwise drop it
  silently, and ``{"sed": 5}`` would answer with a random seed.
- A file field (``content``, ``style``) sent as text instead of a file is refused with 400:
  BentoML would otherwise take the text for a URL and download it, with no size limit, from the
  service's own network.
Errors use the same JSON shape as every other client error (service/errors.py).
"""

from __future__ import annotations

import difflib
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import refuse, send_error

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
TEXT_FIELD_LIMIT = 1024 * 1024  # Starlette's limit for a form field that is not a file
COPIES = 2  # a held body counts this many times against the upload budget


class FormError(ValueError):
    """A body that cannot be read as the form or JSON its Content-Type says."""


class UploadBudget:
    """Bytes of request bodies held at once (each counted ``COPIES`` times); one per worker."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.held = 0

    def reserve(self, size: int) -> bool:
        """Reserve room for a body of ``size`` bytes; False when it does not fit now. A body larger
        than the whole budget is admitted alone, so that every accepted size can be served."""
        need = COPIES * size
        if self.held and self.held + need > self.budget_bytes:
            return False
        self.held += need
        return True

    def release(self, size: int) -> None:
        self.held -= COPIES * size


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        limits: dict[str, int],
        fields: dict[str, Iterable[str]] | None = None,
        may_be_empty: Iterable[str] = (),
        files: dict[str, Iterable[str]] | None = None,
        form_limits: dict[str, int] | None = None,
        budget: UploadBudget | None = None,
    ):
        self.app = app
        self.limits = limits  # path -> largest body accepted, in bytes
        self.form_limits = form_limits or {}  # path -> largest multipart body, where larger than limits[path]
        self.fields = {path: tuple(names) for path, names in (fields or {}).items()}  # path -> accepted fields
        self.files = {path: frozenset(names) for path, names in (files or {}).items()}  # path -> its file fields
        self.may_be_empty = set(may_be_empty)  # paths whose every field is optional (info, styles)
        self.budget = budget

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
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > limit:
            await _reject(send, 413, "body", f"request body is {_size(declared)}; the limit is {_size(limit)}")
            return
        size = declared if declared is not None else limit
        if self.budget is not None and not self.budget.reserve(size):
            await refuse(
                receive,
                send,
                429,
                "service",
                f"too many uploads in flight ({_size(self.budget.held // COPIES)} held); retry shortly",
                {"Retry-After": "1"},
            )
            return
        try:
            await self._guarded(scope, receive, send, path, limit, content_type)
        finally:
            if self.budget is not None:
                self.budget.release(size)

    async def _guarded(self, scope: Scope, receive, send, path: str, limit: int, content_type: bytes) -> None:
        body = await _read_body(receive, send, limit)
        if body is None:
            return
        problem = self._problem(path, body, content_type)
        if problem is not None:
            await _reject(send, 400, *problem)
            return
        held = [body]
        del body

        async def replay() -> Message:  # the body, read once, handed to the app (and let go here)
            if held:
                return {"type": "http.request", "body": held.pop(), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _problem(self, path: str, body: bytes, content_type: bytes) -> tuple[str, str] | None:
        """(field, message) for a body the endpoint must refuse: empty, malformed, an unknown field,
        text in a file field."""
        if not body.strip():
            if path in self.may_be_empty:
                return None
            return "body", "request body is empty: send a JSON object (or a multipart form for stylize)"
        try:
            parts = form_parts(body, content_type)
        except FormError as e:
            return "body", str(e)
        if path not in self.fields:
            return None
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
    """The fields a request carries, each with whether it came as a file: a multipart form's parts
    (a file is a part with a filename), a url-encoded form's keys or a JSON object's keys. Raises
    ``FormError`` for a multipart body BentoML could not parse. Anything else (malformed JSON, a
    non-object) gives none: BentoML's own checks answer those."""
    kind = content_type.lower()
    if kind.startswith(b"multipart/form-data"):
        return multipart_parts(body, content_type)
    if kind.startswith(b"application/x-www-form-urlencoded"):
        return [(name, False) for name, _ in urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True)]
    try:
        obj = json.loads(body)
    except ValueError:
        return []
    return [(str(k), False) for k in obj] if isinstance(obj, dict) else []


def multipart_parts(body: bytes, content_type: bytes) -> list[tuple[str, bool]]:
    """A multipart body's (name, is_file) parts, read by the parser Starlette uses (headers only;
    no part's data is kept), with the checks Starlette makes after it."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise FormError("multipart/form-data without a boundary: the Content-Type needs `; boundary=...`")
    parts: list[tuple[str, bool]] = []
    state: dict[str, Any] = {"headers": {}, "name": b"", "value": b"", "text": 0, "ended": False}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["name"].lower()] = state["value"]
        state["name"] = state["value"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition"))
        if b"name" not in disposition:
            raise FormError(f"multipart part {len(parts) + 1} has no Content-Disposition with a name")
        parts.append((disposition[b"name"].decode("utf-8", "replace"), b"filename" in disposition))
        state["headers"], state["text"] = {}, 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if not parts[-1][1]:
            state["text"] += end - start
            if state["text"] > TEXT_FIELD_LIMIT:
                raise FormError(
                    f"form field {parts[-1][0]!r} is over {_size(TEXT_FIELD_LIMIT)}; send large data as a file"
                )

    def on_end() -> None:
        state["ended"] = True

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise FormError(f"malformed multipart body ({e}); the boundary is {boundary.decode('latin-1')!r}") from None
    if not state["ended"]:
        raise FormError("malformed multipart body: it does not end with the closing boundary (--BOUNDARY--)")
    return parts


def unknown_field_message(name: str, accepted: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(accepted) if accepted else "none (send an empty body or {})"
    return f"unknown field {name!r}; {hint}accepted fields: {listed}"


async def _reject(send, status: int, field: str, message: str) -> None:
    await send_error(send, status, field, message, {"Connection": "close"})


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"
