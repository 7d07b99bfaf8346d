"""The service's own series on ``/metrics``, beside BentoML's.

Created when the service starts, not at import: BentoML sets up Prometheus' multiprocess mode
before the service is built, and series made before that would not be served.

- ``atelier_stylize_queue_depth{state="queued|running"}``: stylisations waiting and running;
- ``atelier_stylize_requests_total{outcome="admitted|refused|abandoned"}``: what became of each
  stylisation that reached the queue (abandoned: its client left while it waited);
- ``atelier_stylize_queue_wait_seconds``: how long each waited, admitted or not;
- ``atelier_execution_provider{role,provider}``, ``atelier_provider_fallback``: where each model runs.
"""

from __future__ import annotations

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
OUTCOMES = {"admitted": "admitted", "refused": "refused", "dropped": "abandoned"}


class QueueMetrics:
    def __init__(self) -> None:
        import prometheus_client

        self._depth = prometheus_client.Gauge(
            "atelier_stylize_queue_depth",
            "Stylisations waiting for a slot (queued) and running",
            ["state"],
            multiprocess_mode="livesum",
        )
        self._requests = prometheus_client.Counter(
            "atelier_stylize_requests",
            "Stylisations that reached the queue, by what became of them",
            ["outcome"],
        )
        self._wait = prometheus_client.Histogram(
            "atelier_stylize_queue_wait_seconds",
            "Seconds a stylisation waited in the queue (admitted, refused after waiting, or abandoned)",
            buckets=WAIT_BUCKETS,
        )
        for outcome in OUTCOMES.values():
            self._requests.labels(outcome=outcome)  # every series from the start, at 0
        self.depth(0, 0)

    def outcome(self, outcome: str, waited: float | None) -> None:
        self._requests.labels(outcome=OUTCOMES[outcome]).inc()
        if waited is not None:
            self._wait.observe(waited)

    def depth(self, queued: int, running: int) -> None:
        self._depth.labels(state="queued").set(queued)
        self._depth.labels(state="running").set(running)


def export_provider_gauges(providers: dict[str, str], first_choice: str) -> None:
    """``providers``: role -> the provider its session runs on; ``first_choice``: the provider
    ``ATELIER_PROVIDERS`` names first."""
    import prometheus_client

    running = prometheus_client.Gauge(
        "atelier_execution_provider",
        "1 for the ONNX Runtime execution provider each model runs on",
        ["role", "provider"],
        multiprocess_mode="livemax",
    )
    for role, provider in providers.items():
        running.labels(role=role, provider=provider).set(1)
    fallback = prometheus_client.Gauge(
        "atelier_provider_fallback",
        "1 when a model runs on another provider than the first in ATELIER_PROVIDERS",
        multiprocess_mode="livemax",
    )
    fallback.set(int(any(p != first_choice for p in providers.values())))
