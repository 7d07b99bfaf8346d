"""The service's HTTP layer around its endpoints: the ASGI middleware in order, the playground,
and the OpenAPI document made from BentoML's (``service/openapi.py``) with what this export
allows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.staticfiles import StaticFiles

from service import __version__
from service.access import KeyGuard
from service.api import FORM_BODY_LIMIT, JSON_BODY_LIMIT, MAX_IN_FLIGHT, MAX_STYLES
from service.lifecycle import TrafficGuard
from service.limits import BodyGuard, UploadBudget
from service.manifest import ManifestError, read_manifest
from service.openapi import ApiDocs, openapi_document
from service.request_id import RequestIds
from service.settings import Settings

PLAYGROUND = Path(__file__).resolve().parent / "playground"
# What the schemas alone cannot say, added to the operations' descriptions in the OpenAPI document.
API_NOTES = {
    "/stylize": "Give a style: `style` (one or more image files) and/or `style_name` (presets); "
    "a request with neither is refused with 400.",
    "/sample": "Send JSON, or a multipart form to upload `style` images.",
    "/sample_grid": "Send JSON, or a multipart form to upload `style` images.",
}
OPTIONAL_BODY = ("/styles", "/info")  # every field optional: an empty body is fine
FORM_PATHS = ("/sample", "/sample_grid", "/stylize")  # take files, and so multipart bodies


def install(service: Any, settings: Settings) -> None:
    """The middleware, outermost first: the request id (on every response and error), the API's own
    document and page, keys and rate limits, requests in flight, then the body's checks and
    admission; and the playground, a static page calling the API on the same port."""
    api_paths = [f"/{name}" for name in service.apis]
    service.add_asgi_middleware(RequestIds)
    service.add_asgi_middleware(ApiDocs, make_document=lambda: document(service, settings))
    service.add_asgi_middleware(
        KeyGuard,
        keys=settings.api_keys,
        guarded_paths=[*api_paths, *(["/metrics"] if settings.metrics_need_key else [])],
        rate_limit_per_minute=settings.rate_limit_per_minute,
    )
    service.mount_asgi_app(StaticFiles(directory=PLAYGROUND, html=True), path="/playground", name="playground")
    service.add_asgi_middleware(
        TrafficGuard, api_paths=api_paths, max_in_flight=MAX_IN_FLIGHT, queued_paths=("/stylize",)
    )
    service.add_asgi_middleware(
        BodyGuard,
        limits={path: FORM_BODY_LIMIT if path == "/stylize" else JSON_BODY_LIMIT for path in api_paths},
        form_limits={path: FORM_BODY_LIMIT for path in FORM_PATHS},
        fields={f"/{name}": list(api.input_spec.model_fields) for name, api in service.apis.items()},
        files={f"/{name}": list(api.input_spec.multipart_fields) for name, api in service.apis.items()},
        may_be_empty=OPTIONAL_BODY,
        budget=UploadBudget(settings.upload_budget_bytes),
    )


def document(service: Any, settings: Settings) -> dict[str, Any]:
    return openapi_document(
        service.openapi_spec.asdict(),
        version=__version__,
        api_paths=[f"/{name}" for name in service.apis],
        keys=bool(settings.api_keys),
        metrics_need_key=settings.metrics_need_key,
        notes=API_NOTES,
        fields=export_fields(settings.exports),
        one_of_fields={"/stylize": ["style", "style_name"]},
        optional_body=OPTIONAL_BODY,
    )


def export_fields(exports: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """What this export allows, for the OpenAPI document: its presets' names and its labels."""
    try:
        manifest = read_manifest(exports / "manifest.json")
    except (ManifestError, OSError):
        return {}  # the service refuses to start on it, and says why
    presets = "|".join(re.escape(p.name) for p in manifest.style.presets) if manifest.style else ""
    generator = manifest.models.generator
    labels = (generator.class_labels if generator else None) or []
    number = r"\s*\d+(\.\d*)?\s*"
    fields: dict[str, dict[str, Any]] = {"weights": {"pattern": f"^{number}(,{number}){{0,{MAX_STYLES - 1}}}$"}}
    if manifest.style:
        fields["strength"] = {"default": manifest.style.default_strength}
    if presets:
        fields["style_name"] = {"pattern": f"^({presets})(,({presets})){{0,{MAX_STYLES - 1}}}$"}
    if labels:
        fields["label"] = {"maximum": len(labels) - 1}
    return {path: fields for path in ("/sample", "/sample_grid", "/interpolate", "/stylize")}
