"""Request ids, and one shape for every error body that leaves the service.

``RequestIds`` (the outermost of the service's ASGI middleware) takes the client's ``X-Request-ID``
when it is a sane token (at most 128 characters of letters, digits and ``-_.:``) or makes one,
echoes it on every response, puts it into the access log line (``RequestIdFilter`` on BentoML's
``bentoml.access`` logger, which logs inside the request's context) and into every JSON error
body. Error bodies made below it (BentoML's validation errors, its ``{"error": ...}`` lists and
500s) are rewritten into the service's one shape (``service/errors.py``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
from typing import Any

from service.errors import normalised_error, send_error

logger = logging.getLogger("atelier")
HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("atelier_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    return _current.get()


def new_request_id() -> str:
    return secrets.token_hex(8)


class RequestIds:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER)
        request_id = given.decode() if given is not None and _SANE.fullmatch(given) else new_request_id()
        token = _current.set(request_id)
        held: dict[str, Any] | None = None  # an error's start message, held until its body is rewritten
        chunks: list[bytes] = []
        started = False

        async def send_with_id(message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
                if message["status"] >= 400 and _is_json(headers):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = json.dumps(normalised_error(b"".join(chunks), held["status"], request_id)).encode()
                headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
                await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                message = {"type": "http.response.body", "body": body}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if held is not None or started:
                raise
            # the one place an unexpected error becomes an answer: logged with its id, a 500 sent
            logger.exception("unhandled error")
            await send_error(send_with_id, 500, "service", "an unexpected error occurred; the log has it under this id")
        finally:
            _current.reset(token)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.lower().startswith(b"application/json") for k, v in headers)


class RequestIdFilter(logging.Filter):
    """Appends ``request_id=...`` to each record logged while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _current.get()  # letters, digits and -_.: only: nothing to escape
        if request_id is None or "request_id=" in str(record.msg):
            return True
        if isinstance(record.args, tuple) and record.args:
            record.msg, record.args = f"{record.msg} request_id=%s", (*record.args, request_id)
        else:  # no arguments (the message is not %-formatted) or a mapping
            record.msg = f"{record.msg} request_id={request_id}"
        return True


def log_request_ids(*logger_names: str) -> None:
    """Install ``RequestIdFilter`` on these loggers (once each)."""
    for name in logger_names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RequestIdFilter) for f in target.filters):
            target.addFilter(RequestIdFilter())
