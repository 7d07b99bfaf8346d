"""One shape for every client error: ``{"error": "<field>: <message>", "detail": [{"loc": [field], "msg": ...}]}``.

It matches what BentoML returns for its own request validation errors (type and bound checks
declared on the endpoints), so clients parse one format.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse


def error_payload(field: str, message: str) -> dict[str, Any]:
    return {"error": f"{field}: {message}", "detail": [{"loc": [field], "msg": message, "type": "value_error"}]}


def error_response(field: str, message: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_payload(field, message), status_code=status, headers=headers)


async def send_error(
    send: Callable[[dict], Awaitable[None]],
    status: int,
    field: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    """The same error, sent by ASGI middleware that answers before the app runs."""
    payload = json.dumps(error_payload(field, message)).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
