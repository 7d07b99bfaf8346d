"""API keys, on a real `bentoml serve` of a style-only export with ``ATELIER_API_KEYS`` set: the
API routes need `Authorization: Bearer <key>`, the probes and /metrics do not, a key is never
logged; the client, its command line and the playground (headless Chromium) send it; an error
that retrying cannot mend (501: no generator in this export) is not retried; the per-key rate
limit answers 429 with Retry-After."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests
from openapi_spec_validator import OpenAPIV30SpecValidator

from atelier_client import Atelier, AtelierError
from bench.pipeline import REPO, Server, export
from service.access import TokenBuckets
from tests.browser import open_browser, wait

KEY, OTHER = "k-0123456789abcdef0123", "k-fedcba9876543210fedc"
API = ("/sample", "/sample_grid", "/interpolate", "/stylize", "/styles", "/info")


@pytest.fixture(scope="module")
def style_only(tiny_style_run, tmp_path_factory):
    return export(tmp_path_factory.mktemp("style-only"), None, tiny_style_run)


@pytest.fixture(scope="module")
def keyed(style_only, tmp_path_factory):
    env = {"ATELIER_API_KEYS": f"{KEY}, {OTHER}"}
    with Server(style_only, tmp_path_factory.mktemp("keyed") / "serve.log", env=env) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("path", API)
def test_every_api_route_needs_a_known_key(keyed, path):
    for headers, words in (
        ({}, "needs an API key"),
        (bearer("k-not-a-key-of-this-service"), "unknown API key"),
        ({"Authorization": f"Basic {KEY}"}, "malformed Authorization header"),
        ({"Authorization": "Bearer"}, "malformed Authorization header"),
    ):
        r = requests.post(f"{keyed.url}{path}", json={}, headers=headers, timeout=30)
        assert r.status_code == 401 and words in r.json()["error"], (headers, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer") and r.json()["request_id"]
    if path in ("/styles", "/info"):
        for key in (KEY, OTHER):
            assert requests.post(f"{keyed.url}{path}", json={}, headers=bearer(key), timeout=30).status_code == 200


def test_probes_metrics_and_the_document_stay_open_and_keys_are_never_logged(keyed):
    for path in ("/livez", "/readyz", "/metrics", "/docs.json", "/", "/playground/"):
        assert requests.get(f"{keyed.url}{path}", timeout=30).status_code == 200, path
    doc = requests.get(f"{keyed.url}/docs.json", timeout=30).json()
    OpenAPIV30SpecValidator(doc).validate()
    assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert (
        doc["paths"]["/stylize"]["post"]["security"] == [{"apiKey": []}]
        and "security" not in doc["paths"]["/livez"]["get"]
    )
    log = keyed.log_path.read_text()
    assert "status=401" in log and KEY not in log and OTHER not in log


def test_the_client_sends_its_key_and_does_not_retry_what_retrying_cannot_mend(keyed, monkeypatch):
    with Atelier(keyed.url, api_key=KEY) as atelier:
        assert {p.name for p in atelier.styles()} >= {"wheat_field"}
        assert atelier.info().models["stylizer"].provider == "CPUExecutionProvider"
        before = keyed.log_path.read_text().count("path=/sample,")
        with pytest.raises(AtelierError) as missing:
            atelier.sample(n=1, seed=1)
        assert missing.value.status == 501 and "no generator" in missing.value.message and missing.value.request_id
    with Atelier(keyed.url, api_key="k-wrong-wrong-wrong-wrong") as atelier, pytest.raises(AtelierError) as wrong:
        atelier.styles()
    assert wrong.value.status == 401 and wrong.value.field == "authorization"
    assert keyed.log_path.read_text().count("path=/sample,") == before + 1  # asked once, not retried
    monkeypatch.setenv("ATELIER_API_KEY", OTHER)
    with Atelier(keyed.url) as atelier:  # the key from the environment
        assert atelier.styles()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atelier_client", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **env},
    )


def test_the_command_line_takes_the_key_as_a_flag_or_from_the_environment(keyed):
    assert "wheat_field" in cli("--url", keyed.url, "--api-key", KEY, "styles").stdout
    assert "wheat_field" in cli("--url", keyed.url, "styles", ATELIER_API_KEY=OTHER).stdout
    refused = cli("--url", keyed.url, "styles", ATELIER_API_KEY="")
    assert refused.returncode == 1 and "401 authorization: this service needs an API key" in refused.stderr
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"atelier-client \d+\.\d+\.\d+\n", version.stdout)


def test_the_playground_asks_for_the_key_once_and_keeps_it_for_the_tab(keyed):
    from selenium.webdriver.common.by import By

    driver = open_browser()
    try:
        driver.get(f"{keyed.url}/playground/")
        wait(driver, "return document.getElementById('key-dialog').open")
        driver.find_element(By.ID, "api-key").send_keys(KEY)
        driver.find_element(By.ID, "key-ok").click()
        wait(driver, "return document.body.dataset.ready === 'true'")
        shown = driver.execute_script(
            "return [...document.querySelectorAll('#presets button')].map(b => b.dataset.name)"
        )
        assert "wheat_field" in shown
        assert driver.execute_script("return sessionStorage.getItem('atelier-api-key')") == KEY
        driver.refresh()  # the same tab: no second question
        wait(driver, "return document.body.dataset.ready === 'true'")
        assert not driver.execute_script("return document.getElementById('key-dialog').open")
    finally:
        driver.quit()


def test_the_rate_limit_refuses_with_retry_after(style_only, tmp_path):
    env = {"ATELIER_RATE_LIMIT": "3"}  # three requests a minute per client address (no keys here)
    with Server(style_only, tmp_path / "serve.log", env=env) as server:
        answers = [requests.post(f"{server.url}/styles", json={}, timeout=30) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1 and "rate limit of 3" in answers[-1].json()["error"]
        assert requests.get(f"{server.url}/livez", timeout=10).status_code == 200  # probes are never limited


def test_metrics_need_a_key_when_the_operator_says_so(style_only, tmp_path):
    env = {"ATELIER_API_KEYS": KEY, "ATELIER_METRICS_AUTH": "key"}
    with Server(style_only, tmp_path / "serve.log", env=env) as server:
        refused = requests.get(f"{server.url}/metrics", timeout=30)
        assert refused.status_code == 401 and "needs an API key" in refused.json()["error"]
        assert requests.get(f"{server.url}/metrics", headers=bearer(OTHER), timeout=30).status_code == 401
        scraped = requests.get(f"{server.url}/metrics", headers=bearer(KEY), timeout=30)
        assert scraped.status_code == 200 and "atelier_stylize_queue_depth" in scraped.text
        for probe in ("/livez", "/readyz"):  # the probes stay open for the kubelet
            assert requests.get(f"{server.url}{probe}", timeout=30).status_code == 200


def test_a_bucket_refills_at_its_rate_and_holds_at_most_a_minutes_worth():
    now = [0.0]
    buckets = TokenBuckets(60, clock=lambda: now[0])  # one a second, 60 at most
    assert all(buckets.take("a") == 0 for _ in range(60))
    assert buckets.take("a") == pytest.approx(1.0) and buckets.take("b") == 0  # each identity its own
    now[0] += 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 3600  # an hour idle: full again, not 3600 tokens
    assert sum(buckets.take("a") == 0 for _ in range(70)) == 60
