"""Admission before buffering: a burst of large uploads is refused at the door (429 with
Retry-After) once the bodies held would pass the upload budget, so the worker's memory stays
bounded, on a real `bentoml serve` (the full-size burst: `make soak`, bench/upload_burst.py)."""

from __future__ import annotations

from bench.pipeline import Server
from bench.upload_burst import measured_burst

CLIENTS = 16
MEGABYTES = 6.0  # each of the two PNGs: a body of about 12 MB
BUDGET_MB = 48  # the bodies held at once, each counted twice: two requests in
# Without admission the 16 bodies (and the endpoint's copies of their files) are all held at
# once: 16 x 2 x 12 MB, about 380 MB above the idle worker. With it, two at a time.
MAX_GROWTH_MB = 200


def test_a_burst_of_large_uploads_is_admitted_within_the_budget(exports_dir, tmp_path):
    env = {"ATELIER_UPLOAD_BUDGET_MB": str(BUDGET_MB)}
    with Server(exports_dir, tmp_path / "serve.log", env=env) as server:
        result = measured_burst(server, CLIENTS, MEGABYTES)
        assert server.ready()
    assert not result["unexpected"], result
    assert result["statuses"].get("200", 0) >= 1 and result["statuses"].get("429", 0) >= 1, result
    assert result["rss_growth_mb"] <= MAX_GROWTH_MB, result
