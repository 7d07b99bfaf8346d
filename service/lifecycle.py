"""The worker's life: requests in flight, overload, and a graceful shutdown on SIGTERM.

``TrafficGuard`` (ASGI middleware) counts the API requests in flight and refuses one more than
``max_in_flight`` with 429, and every API request with 503 once the worker is draining; every
429 and 503 that leaves the service (its own, BentoML's ``/readyz``) carries ``Retry-After``.

On SIGTERM (what Kubernetes and ``docker stop`` send) the worker drains:
1. at once: ``/readyz`` answers 503 and new API requests are refused with 503 + ``Retry-After``
   (``/livez`` stays 200: the process is healthy, only leaving);
2. after ``ATELIER_DRAIN_SECONDS`` (default 2; time for a load balancer to see the 503) the
   server stops accepting connections and waits for the requests in flight to finish;
3. after ``ATELIER_SHUTDOWN_TIMEOUT`` seconds from the signal (default 25, under Kubernetes'
   default 30 s grace period) whatever is still running is abandoned.
The process then exits with status 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from service.errors import refuse

logger = logging.getLogger("atelier")


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.queued_in_flight = 0  # requests on paths with their own queue (stylize)

    def install_sigterm(self, drain_seconds: float, shutdown_timeout: float) -> bool:
        """Wrap the server's SIGTERM handler (uvicorn's) with the drain above; only from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):
            return False

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.draining:
                return
            self.draining = True
            logger.info(
                "SIGTERM: draining (readyz 503, new requests refused); %d request(s) in flight; "
                "closing in %.3g s, giving up on unfinished work at %.3g s",
                self.in_flight,
                drain_seconds,
                shutdown_timeout,
            )
            stop = threading.Timer(drain_seconds, server_handler, (signal.SIGTERM, None))
            # uvicorn's handler, called again with SIGINT once it is stopping, forces the exit.
            force = threading.Timer(max(shutdown_timeout, drain_seconds), server_handler, (signal.SIGINT, None))
            for timer in (stop, force):
                timer.daemon = True
                timer.start()

        signal.signal(signal.SIGTERM, on_sigterm)
        return True


LIFECYCLE = Lifecycle()  # one per worker process, shared by the service instance and the middleware


class TrafficGuard:
    def __init__(
        self,
        app,
        api_paths: list[str],
        max_in_flight: int,
        lifecycle: Lifecycle = LIFECYCLE,
        retry_after: int = 1,
        queued_paths: tuple[str, ...] = (),
    ):
        self.app = app
        self.api_paths = set(api_paths)
        # Paths with their own admission queue (stylize): counted apart, with a cap of their own,
        # so that requests waiting there never fill the in-flight limit the cheap endpoints need.
        self.queued_paths = set(queued_paths)
        self.max_in_flight = max_in_flight
        self.lifecycle = lifecycle
        self.retry_after = retry_after

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        retry_after = str(self.retry_after).encode()

        async def send_with_retry_after(message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"retry-after" for k, _ in headers):
                    message = {**message, "headers": headers + [(b"retry-after", retry_after)]}
            await send(message)

        if scope["path"] not in self.api_paths:
            await self.app(scope, receive, send_with_retry_after)
            return
        if self.lifecycle.draining:
            await _refuse(
                receive, send, 503, "service", "shutting down; retry (another replica will answer)", self.retry_after
            )
            return
        counter = "queued_in_flight" if scope["path"] in self.queued_paths else "in_flight"
        if getattr(self.lifecycle, counter) >= self.max_in_flight:
            await _refuse(
                receive,
                send,
                429,
                "service",
                f"too many requests in flight (limit {self.max_in_flight}); retry later",
                self.retry_after,
            )
            return
        setattr(self.lifecycle, counter, getattr(self.lifecycle, counter) + 1)
        try:
            await self.app(scope, receive, send_with_retry_after)
        finally:
            setattr(self.lifecycle, counter, getattr(self.lifecycle, counter) - 1)


async def _refuse(receive, send, status: int, field: str, message: str, retry_after: int) -> None:
    await refuse(receive, send, status, field, message, {"Retry-After": str(retry_after)})
