"""The service under faults and overload, each test on its own real `bentoml serve`:
SIGTERM drains, an export folder changed under a running service, a killed worker, a full
stylisation queue (429 + Retry-After), a queued client that leaves, and a short soak."""

from __future__ import annotations

import os
import shutil
import signal
import socket

import pytest
import requests

from bench import hostile_images as hi
from bench.pipeline import Server
from bench.soak import photo, worker_pids
from bench.soak import run as soak
from tests.helpers import SLOW, in_background, post_stylize, queue_state, wait_until


def test_sigterm_turns_readyz_503_finishes_work_in_flight_refuses_new_and_exits_0(exports_dir, tmp_path):
    server = Server(exports_dir, tmp_path / "serve.log", env={"ATELIER_DRAIN_SECONDS": "3"}).__enter__()
    try:
        slow = in_background(post_stylize, server, SLOW, max_side=1024)
        wait_until(lambda: queue_state(server)["running"] == 1, 30, "the slow stylisation running")
        os.killpg(server.process.pid, signal.SIGTERM)
        wait_until(
            lambda: requests.get(f"{server.url}/readyz", timeout=2).status_code == 503, 2, "readyz 503 after SIGTERM"
        )
        readyz = requests.get(f"{server.url}/readyz", timeout=2)
        assert readyz.headers["Retry-After"].isdigit()
        assert requests.get(f"{server.url}/livez", timeout=2).status_code == 200  # leaving, not broken
        refused = requests.post(f"{server.url}/sample", json={"n": 1}, timeout=5)
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit(), refused.text
        assert "shutting down" in refused.json()["error"]
        assert slow["done"].wait(60), "the request in flight never finished"
        assert "error" not in slow, slow.get("error")
        assert slow["result"].status_code == 200 and slow["result"].headers["X-Atelier-Size"] == "1024x768"
        assert server.process.wait(timeout=30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/readyz", timeout=2)
    finally:
        server.__exit__()


def test_an_export_changed_while_serving_is_reported_and_refused_at_restart(exports_dir, tmp_path):
    exports = tmp_path / "exports"
    shutil.copytree(exports_dir, exports)
    with Server(exports, tmp_path / "serve.log") as server:
        before = requests.post(f"{server.url}/sample", json={"n": 2, "seed": 7}, timeout=30).json()
        assert requests.post(f"{server.url}/info", json={}, timeout=30).json()["export_check"]["matches_loaded"]
        with open(exports / "generator.onnx", "ab") as f:
            f.write(b"tampered")
        thumbnail = next((exports / "presets").iterdir())
        thumbnail.unlink()
        after = requests.post(f"{server.url}/sample", json={"n": 2, "seed": 7}, timeout=30).json()
        assert after["images"] == before["images"]  # still the verified model it loaded
        assert post_stylize(server, hi.png()).status_code == 200
        check = requests.post(f"{server.url}/info", json={}, timeout=30).json()["export_check"]
        assert check["matches_loaded"] is False
        assert check["changed"] == ["generator.onnx"]
        assert check["missing"] == [f"presets/{thumbnail.name}"]
        assert "restart will refuse" in check["note"]
    with pytest.raises(RuntimeError, match="does not match the manifest|missing"):
        Server(exports, tmp_path / "restart.log", startup_timeout=30).__enter__()


def test_a_killed_worker_is_replaced_and_readyz_follows(exports_dir, tmp_path):
    with Server(exports_dir, tmp_path / "serve.log") as server:
        (old,) = worker_pids(server)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not server.ready(), 10, "readyz failing while no worker runs")
        wait_until(server.ready, 120, "readyz 200 again")
        (new,) = worker_pids(server)
        assert new != old
        r = requests.post(f"{server.url}/sample", json={"n": 1, "seed": 1}, timeout=30)
        assert r.status_code == 200, r.text


def test_a_full_queue_answers_429_with_retry_after_and_keeps_serving(exports_dir, tmp_path):
    with Server(exports_dir, tmp_path / "serve.log", env={"ATELIER_QUEUE_SECONDS": "0"}) as server:
        slow = in_background(post_stylize, server, SLOW, max_side=1024)
        wait_until(lambda: queue_state(server)["running"] == 1, 30, "the slow stylisation running")
        refused = post_stylize(server, hi.png())
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert "busy" in refused.json()["error"]
        broken = post_stylize(server, hi.truncated_png())  # a bad upload is answered at once, not refused as busy
        assert broken.status_code == 400 and "truncated" in broken.json()["error"], broken.text
        sample = requests.post(f"{server.url}/sample", json={"n": 1}, timeout=10)  # cheap calls are not queued
        assert sample.status_code == 200
        assert slow["done"].wait(60) and slow["result"].status_code == 200
        assert post_stylize(server, hi.png()).status_code == 200  # room again
        assert queue_state(server)["refused"] == 1


def test_a_queued_request_whose_client_left_is_never_run(exports_dir, tmp_path):
    """The client leaves once its request is in the queue (seen in ``info``), not after a fixed
    time: on a fast machine the slow stylisation could end within any fixed wait, and the request
    would run before its client left."""
    with Server(exports_dir, tmp_path / "serve.log") as server:
        # 2.25x SLOW's pixels: about 4 s on an AVX-512 CPU, so the second request is seen queued with room
        slow = in_background(post_stylize, server, photo(1536, 1152), max_side=1536)
        wait_until(lambda: queue_state(server)["running"] == 1, 30, "the slow stylisation running")
        request = requests.Request(
            "POST",
            f"{server.url}/stylize",
            files={"content": ("c.jpg", photo(640, 480))},
            data={"style_name": "wheat_field"},
        ).prepare()
        host, port = server.url.removeprefix("http://").split(":")
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **request.headers}.items())
        with socket.create_connection((host, int(port)), timeout=30) as client:
            client.sendall(f"POST /stylize HTTP/1.1\r\n{head}\r\n".encode() + request.body)
            wait_until(lambda: queue_state(server)["queued"] == 1, 30, "the second request queued")
        # the client has left, its request still queued behind the slow one
        assert slow["done"].wait(60) and slow["result"].status_code == 200
        wait_until(lambda: queue_state(server)["dropped"] == 1, 10, "the abandoned request dropped")
        state = queue_state(server)
        assert state["admitted"] == 1 and state["queued"] == 0  # only the slow one ran


def test_short_soak_mixed_valid_and_hostile_load(exports_dir, tmp_path):
    """`make soak` in miniature: 16 clients for 10 s; every answer as expected, memory flat.

    The soak's latency judgement (p99 within 5x p50) is left to `make soak` itself: a test run
    shares its 2 cores with whatever else the machine does, so a tail ratio here judges the
    machine, not the service (a CI run failed on ``sample`` at p99/p50 6.7, with every answer
    right)."""
    with Server(exports_dir, tmp_path / "serve.log") as server:
        report = soak(server.url, server, clients=16, duration=10, max_side=256, timeout=60, out=lambda line: None)
    assert report["unexpected"] == [], report["unexpected"]
    assert report["rss_growth"] <= 0.10, report
    assert (
        report["kinds"]["sample"]["statuses"].get("200", 0) > 0
        and report["kinds"]["stylize"]["statuses"].get("200", 0) > 0
    )
    assert sum(report["kinds"]["stylize+hostile"]["statuses"].get(str(c), 0) for c in range(400, 500)) > 0
