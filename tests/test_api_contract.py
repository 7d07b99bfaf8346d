"""The API as an outside client sees it, on a real `bentoml serve`: the OpenAPI document is valid
for the version it declares, an OpenAPI fuzzer (schemathesis) finds no 5xx and no answer the
document does not allow, malformed multipart is a 400 on every route, every response carries a
request id (also in its error body and its log line), and the stylize queue is in /metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import OpenAPIV30SpecValidator

from bench import hostile_images as hi
from bench.pipeline import REPO

API = ("/sample", "/sample_grid", "/interpolate", "/stylize", "/styles", "/info")
FUZZ_EXAMPLES = 15  # per route and phase


def test_the_openapi_document_is_valid_for_the_version_it_declares(server):
    doc = requests.get(f"{server.url}/docs.json", timeout=30).json()
    assert doc["openapi"] == "3.0.2"
    OpenAPIV30SpecValidator(doc).validate()
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["detail"]["type"] == "array" and "request_id" in error["required"]
    stylize = doc["paths"]["/stylize"]["post"]
    form = stylize["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["anyOf"] == [{"required": ["style"]}, {"required": ["style_name"]}]
    assert form["additionalProperties"] is False and "neither is refused with 400" in stylize["description"]
    assert "wheat_field" in form["properties"]["style_name"]["pattern"]  # this export's presets
    for path in API:
        responses = doc["paths"][path]["post"]["responses"]
        assert {"200", "400", "413", "429", "501", "503"} <= set(responses), path
        assert "401" not in responses  # no keys on this server
        assert all("X-Request-ID" in r["headers"] for r in responses.values())


def test_the_fuzzer_finds_no_server_error_and_nothing_the_document_does_not_allow(server, tmp_path):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [str(schemathesis), "--config-file", str(REPO / "tests" / "schemathesis.toml"), "run"]
        + [f"{server.url}/docs.json", "--max-examples", str(FUZZ_EXAMPLES), "--seed", "1", "--no-color"]
        + ["--request-timeout", "120"],  # a 64-sample painted grid on a busy CI machine
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache folder (.schemathesis) goes there
    )
    summary = done.stdout[done.stdout.rfind("SUMMARY") :]
    found = done.stdout[done.stdout.find("FAILURES") if "FAILURES" in done.stdout else done.stdout.find("ERRORS") :]
    assert done.returncode == 0, found[:12000] + done.stderr[-2000:]
    tested = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert tested and int(tested[1]) == int(tested[2]) >= 250, summary
    assert server.ready()


MALFORMED = [
    ("multipart/form-data", b"{}", "without a boundary"),
    ("multipart/form-data; boundary=B", b"--B\r\n[]--B--\r\n", "malformed multipart body"),
    (
        "multipart/form-data; boundary=B",
        b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n",
        "no Content-Disposition",
    ),
    (
        "multipart/form-data; boundary=B",
        b'--B\r\nContent-Disposition: form-data; name="n"\r\n\r\n1\r\n',
        "closing boundary",
    ),
]


@pytest.mark.parametrize("path", API)
@pytest.mark.parametrize(
    "content_type, body, words", MALFORMED, ids=["no-boundary", "headerless", "no-name", "unclosed"]
)
def test_malformed_multipart_is_a_400_that_says_what_is_wrong(server, path, content_type, body, words):
    r = requests.post(f"{server.url}{path}", data=body, headers={"Content-Type": content_type}, timeout=30)
    assert r.status_code == 400 and words in r.json()["error"], r.text
    assert r.json()["request_id"] == r.headers["X-Request-ID"]


BIG_FIELD = b'--B\r\nContent-Disposition: form-data; name="style_name"\r\n\r\n' + b"x" * (2**20 + 1) + b"\r\n--B--\r\n"


@pytest.mark.parametrize("path", API)
def test_a_text_field_over_a_megabyte_is_refused_not_parsed(server, path):
    """BentoML's parser gives up on a form field over 1 MB with a 500; routes that take files refuse
    it first (400), the others refuse the whole body as larger than their limit (413)."""
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    r = requests.post(f"{server.url}{path}", data=BIG_FIELD, headers=headers, timeout=30)
    if path in ("/sample", "/sample_grid", "/stylize"):
        assert r.status_code == 400 and "send large data as a file" in r.json()["error"], r.text
    else:
        assert r.status_code == 413 and "the limit is" in r.json()["error"], r.text


def test_every_response_carries_a_request_id_also_in_its_error_and_its_log_line(server):
    chosen = "trace-0123456789abcdef"
    ok = requests.post(f"{server.url}/styles", json={}, headers={"X-Request-ID": chosen}, timeout=30)
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == chosen
    made = requests.get(f"{server.url}/livez", timeout=10).headers["X-Request-ID"]
    insane = requests.get(f"{server.url}/livez", headers={"X-Request-ID": "a b\tc" * 40}, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{16}", made) and insane.headers["X-Request-ID"] != "a b\tc" * 40
    ours = requests.post(f"{server.url}/sample", json={"n": 1, "label": 99}, timeout=30)  # the service's error
    bentos = requests.post(f"{server.url}/sample", json={"n": 0}, timeout=30)  # BentoML's validation error
    for refused in (ours, bentos):
        body = refused.json()
        assert refused.status_code == 400 and body["request_id"] == refused.headers["X-Request-ID"]
        assert isinstance(body["error"], str) and body["detail"][0]["msg"] and body["detail"][0]["loc"]
    deadline = time.monotonic() + 10
    while f"request_id={bentos.headers['X-Request-ID']}" not in server.log_path.read_text():
        assert time.monotonic() < deadline, "the access log line has no request_id"
        time.sleep(0.2)
    assert re.search(rf"path=/styles.*status=200.*request_id={chosen}", server.log_path.read_text())


def test_the_stylize_queue_is_in_metrics(server):
    before = queue_series(server)
    r = requests.post(
        f"{server.url}/stylize",
        files={"content": ("c.png", hi.png(48, 32))},
        data={"style_name": "wheat_field"},
        timeout=60,
    )
    assert r.status_code == 200
    after = queue_series(server)
    assert (
        after['atelier_stylize_requests_total{outcome="admitted"}']
        == before.get('atelier_stylize_requests_total{outcome="admitted"}', 0) + 1
    )
    assert after["atelier_stylize_queue_wait_seconds_count"] >= 1
    assert {
        'atelier_stylize_queue_depth{state="queued"}',
        'atelier_stylize_requests_total{outcome="abandoned"}',
    } <= set(after)


def queue_series(server) -> dict[str, float]:
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(atelier_stylize_\S+) (\S+)$", text, re.MULTILINE)}
