"""The API's OpenAPI document and its page, both served by the service itself.

BentoML's ``/docs.json`` declares OpenAPI 3.0.2 but writes parts of it in JSON Schema 2020-12
(``exclusiveMinimum: 0.0``, ``{"type": "null"}`` in ``anyOf``) and OpenAPI 2 (``type: file``),
so validators and code generators refuse it, and it documents error bodies that are not what the
service sends. ``openapi_document`` rewrites it into valid OpenAPI 3.0.2: the schemas in 3.0's
dialect, every status an API route answers with the one error shape (``service/errors.py``),
``X-Request-ID`` (and ``Retry-After``, ``WWW-Authenticate``) on the responses, unknown fields
refused (``additionalProperties: false``), the API keys as a bearer scheme when they are on.

BentoML's page at ``/`` loads Google Tag Manager and renders badges from three other sites;
``ApiDocs`` serves the same Swagger UI (BentoML's own copy of its files, on this service) from a
page that makes no request elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

ERROR_STATUSES = {
    "400": "the request is malformed or a field is out of range (the message says which)",
    "401": "an API key is needed, or the one sent is not known (only when the service has keys)",
    "413": "the body, or an image in it, is larger than the service takes",
    "429": "too busy or too many requests: retry after Retry-After seconds",
    "501": "this export has no model for this route (no generator, or no style model)",
    "503": "shutting down, or waited too long for a slot: retry after Retry-After",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail", "request_id"],
    "properties": {
        "error": {"type": "string", "description": "`<field>: <message>`"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "request_id": {"type": "string", "description": "as in the X-Request-ID header"},
    },
}
REQUEST_ID = {
    "description": "the request's id (the client's X-Request-ID, or one made here)",
    "schema": {"type": "string"},
}
RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
DESCRIPTION = (
    "Atelier: GAN sampling and neural style transfer on ONNX Runtime. Every response carries "
    "`X-Request-ID`; every error has the `Error` body. With API keys on, the API routes need "
    "`Authorization: Bearer <key>`; `/livez` and `/readyz` never do."
)


def openapi_document(
    spec: dict[str, Any],
    version: str,
    api_paths: list[str],
    keys: bool,
    metrics_need_key: bool,
    notes: dict[str, str] | None = None,
    fields: dict[str, dict[str, dict[str, Any]]] | None = None,
    one_of_fields: dict[str, list[str]] | None = None,
    optional_body: tuple[str, ...] = (),
) -> dict[str, Any]:
    """BentoML's ``spec`` as valid OpenAPI 3.0.2 (above). Per path: ``notes``, a sentence added to
    its operation's description (what the schema cannot say); ``fields``, what to add to its
    request fields' schemas (what this export allows: its presets, its labels); ``one_of_fields``,
    fields of which at least one is required; ``optional_body``: the paths whose body may be
    empty (every other API route refuses an empty one)."""
    doc = as_openapi_30(json.loads(json.dumps(spec)))  # a copy, its keys strings (BentoML's statuses are ints)
    doc["info"] = {"title": "Atelier", "version": version, "description": DESCRIPTION}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    if keys:
        doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    for path, item in doc["paths"].items():
        for operation in item.values():
            if path in api_paths:
                _api_operation(operation, keys, (notes or {}).get(path))
                _request_body(
                    operation, (fields or {}).get(path, {}), (one_of_fields or {}).get(path), path not in optional_body
                )
            else:
                _infrastructure_operation(path, operation, keys and metrics_need_key)
    return doc


def _api_operation(operation: dict[str, Any], keys: bool, note: str | None) -> None:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses = {"200": operation["responses"]["200"]}
    for status, why in ERROR_STATUSES.items():
        if status == "401" and not keys:
            continue
        headers = {"X-Request-ID": REQUEST_ID}
        if status in ("429", "503"):
            headers["Retry-After"] = RETRY_AFTER
        if status == "401":
            headers["WWW-Authenticate"] = {"description": "Bearer", "schema": {"type": "string"}}
        responses[status] = {"description": why, "headers": headers, "content": error}
    responses["200"].setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
    operation["responses"] = responses
    if keys:
        operation["security"] = [{"apiKey": []}]
    if note:
        operation["description"] = f"{operation.get('description', '').rstrip()}\n\n{note}"


def _request_body(
    operation: dict[str, Any], fields: dict[str, dict[str, Any]], one_of: list[str] | None, required: bool
) -> None:
    body = operation.setdefault("requestBody", {"content": {"application/json": {"schema": {"type": "object"}}}})
    body["required"] = required
    content = body["content"]
    multipart = content.get("multipart/form-data")
    if multipart is not None and "application/json" not in content:
        # JSON too, without the file fields, where no file is required (sample: only a style upload)
        schema = multipart["schema"]
        files = {k for k, v in schema.get("properties", {}).items() if _is_binary(v)}
        if not files & set(schema.get("required", [])):
            properties = {k: v for k, v in schema.get("properties", {}).items() if k not in files}
            content["application/json"] = {"schema": {**schema, "properties": properties}}
    for media in content.values():
        schema = media.setdefault("schema", {"type": "object"})
        schema["additionalProperties"] = False  # unknown fields are refused (400)
        for name, extra in fields.items():
            if name in schema.get("properties", {}):
                schema["properties"][name].update(extra)
        present = [name for name in one_of or () if name in schema.get("properties", {})]
        if present:
            schema["anyOf"] = [{"required": [name]} for name in present]


def _is_binary(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "binary" or schema.get("items", {}).get("format") == "binary"


def _infrastructure_operation(path: str, operation: dict[str, Any], needs_key: bool) -> None:
    ok = operation.setdefault("responses", {}).setdefault("200", {"description": "OK"})
    ok.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
    if path in ("/readyz", "/healthz"):
        operation["responses"]["503"] = {
            "description": "not ready yet (loading, warming up) or shutting down",
            "headers": {"X-Request-ID": REQUEST_ID, "Retry-After": RETRY_AFTER},
        }
    if needs_key and path == "/metrics":
        operation["security"] = [{"apiKey": []}]
        operation["responses"]["401"] = {"description": "an API key is needed", "headers": {"X-Request-ID": REQUEST_ID}}


def as_openapi_30(node: Any) -> Any:
    """JSON Schema 2020-12 and OpenAPI 2 forms in ``node`` rewritten in OpenAPI 3.0's dialect:
    ``anyOf`` with ``{"type": "null"}`` -> ``nullable``, a numeric ``exclusiveMinimum`` /
    ``exclusiveMaximum`` -> ``minimum`` / ``maximum`` with the boolean, ``type: file`` -> a binary
    string, ``const`` -> a one-value ``enum``, a ``null`` default -> ``nullable``."""
    if isinstance(node, list):
        return [as_openapi_30(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: as_openapi_30(v) for k, v in node.items()}
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[plain], node[bound] = node[bound], True
    if node.get("type") == "file":
        node.update(type="string", format="binary")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            node["nullable"] = True
            if len(rest) == 1:
                del node[key]
                node = {**rest[0], **node}
            else:
                node[key] = rest
    if node.get("type") == "null":
        del node["type"]
        node["nullable"] = True
    if "default" in node and node["default"] is None and _is_schema(node):
        node["nullable"] = True
    return node


def _is_schema(node: dict[str, Any]) -> bool:
    return any(k in node for k in ("type", "anyOf", "oneOf", "allOf", "$ref", "items", "properties"))


PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Atelier API</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
  </head>
  <body>
    <p style="font-family: sans-serif; margin: 1em 2em">
      Atelier's API. The playground is at <a href="./playground/">/playground/</a>;
      the document itself at <a href="./docs.json">/docs.json</a>.</p>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {
        window.ui = SwaggerUIBundle({
          url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true,
          validatorUrl: null,  // Swagger UI would otherwise send the document to validator.swagger.io
          presets: [SwaggerUIBundle.presets.apis],
        });
      };
    </script>
  </body>
</html>
"""


class ApiDocs:
    """ASGI middleware answering ``GET /`` with ``PAGE`` and ``GET /docs.json`` with the document
    (made once, on the first request, from ``make_document()``)."""

    def __init__(self, app, make_document: Callable[[], dict[str, Any]]):
        self.app = app
        self.make_document = make_document
        self._document: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope["path"] not in ("/", "/docs.json")
        ):
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/":
            body, kind = PAGE.encode(), b"text/html; charset=utf-8"
        else:
            if self._document is None:
                self._document = json.dumps(self.make_document()).encode()
            body, kind = self._document, b"application/json"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
