"""One shape for every error body: ``{"error": "<field>: <message>", "detail": [{"loc": [field],
"msg": message, "type": ...}], "request_id": "..."}``.

``detail`` is what BentoML returns for its own request validation errors (type and bound checks
declared on the endpoints), so clients parse one format; ``normalised_error`` brings the rest of
BentoML's error bodies (a bare ``{"error": ...}``, sometimes inside a list) to it. The OpenAPI
document's ``Error`` schema (``service/openapi.py``) describes it.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import JSONResponse

F = TypeVar("F", bound=Callable[..., Any])


class ApiError(Exception):
    """A request the service refuses: ``status`` with the error body for ``field`` and ``message``
    (and ``headers``, e.g. Retry-After). Raised anywhere below an endpoint; ``answers_api_errors``
    turns it into the response, in one place."""

    def __init__(self, field: str, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.headers = field, message, status, headers

    def response(self) -> JSONResponse:
        return error_response(self.field, self.message, self.status, self.headers)


def answers_api_errors(endpoint: F) -> F:
    """An endpoint whose ``ApiError`` becomes its response (with the status set on BentoML's
    context, which otherwise overrides a returned response's status)."""

    def answer(error: ApiError, kwargs: dict[str, Any]) -> JSONResponse:
        response = error.response()
        if (ctx := kwargs.get("ctx")) is not None:
            ctx.response.status_code = response.status_code
        return response

    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await endpoint(*args, **kwargs)
            except ApiError as e:
                return answer(e, kwargs)

    else:

        @functools.wraps(endpoint)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return endpoint(*args, **kwargs)
            except ApiError as e:
                return answer(e, kwargs)

    return wrapper  # type: ignore[return-value]


def _request_id() -> str | None:
    from service.request_id import current_request_id  # request_id imports this module

    return current_request_id()


def error_payload(field: str, message: str) -> dict[str, Any]:
    payload = {"error": f"{field}: {message}", "detail": [{"loc": [field], "msg": message, "type": "value_error"}]}
    if (request_id := _request_id()) is not None:
        payload["request_id"] = request_id
    return payload


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


async def refuse(receive, send, status: int, field: str, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer without running the request. Its body is read (and dropped, never stored) first: a
    client still uploading would otherwise see the connection reset instead of this answer."""
    while True:
        message_in = await receive()
        if message_in["type"] == "http.disconnect" or not message_in.get("more_body", False):
            break
    await send_error(send, status, field, message, headers)


def normalised_error(body: bytes, status: int, request_id: str) -> dict[str, Any]:
    """Any JSON error body as the one shape, with ``request_id``: ours pass unchanged (but for the
    id), BentoML's validation errors keep their ``detail`` list, anything else becomes a message."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML answers some 4xx with its error object inside a list
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        data = {"error": f"HTTP {status}"}
    detail = data.get("detail")
    if not (isinstance(detail, list) and all(isinstance(d, dict) for d in detail)):
        detail = [{"loc": ["request"], "msg": str(detail or data["error"]), "type": "http_error"}]
    return {"error": data["error"], "detail": detail, "request_id": request_id}
