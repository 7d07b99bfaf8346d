"""One shape for every client error: ``{"error": "<field>: <message>", "detail": [{"loc": [field], "msg": ...}]}``.

It matches what BentoML returns for its own request validation errors (type and bound checks
declared on the endpoints), so clients parse one format.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


def error_payload(field: str, message: str) -> dict[str, Any]:
    return {"error": f"{field}: {message}", "detail": [{"loc": [field], "msg": message, "type": "value_error"}]}


def error_response(field: str, message: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_payload(field, message), status_code=status, headers=headers)
