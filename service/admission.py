"""Admission control for heavy work (stylisation): bounded memory, bounded queueing, cheap calls first.

A stylisation can take seconds and gigabytes (the 2048-px one: ~22 s and ~5.8 GB on 2 cores), a
``sample`` a few milliseconds. ``HeavyWork`` keeps them apart:

- Heavy jobs run on their own threads (``slots`` of them), at a low CPU priority (nice 10, set
  per thread; the ONNX Runtime sessions for heavy work are created on these threads, so their
  thread pools inherit it). The cheap endpoints keep BentoML's thread pool and the cores.
- A job is admitted when a slot is free and its estimated memory fits in the budget next to the
  jobs already running (a job larger than the whole budget runs alone). Jobs wait in FIFO order.
- Waiting is brief: a request whose estimated wait (the work queued and running ahead of it, at
  the throughput measured so far) is longer than ``max_wait`` is refused at once with 429 and a
  ``Retry-After``; a queued request whose client disconnects is dropped before it starts.

Estimates come from the job's output size in pixels (known from the image header before any
pixel is decoded): its time from all of them, its memory from one frame's (an animation's frames
run one after another) plus what the caller adds for the frames it holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.runtime import release_memory

logger = logging.getLogger("atelier")

T = TypeVar("T")
HEAVY_NICE = 10  # well below the request threads (0); not 19, where a GIL holder would starve
POLL_SECONDS = 0.25  # how often a queued request checks that its client is still there


class Overloaded(Exception):
    """The request cannot be started soon enough: answer ``status`` with ``Retry-After: retry_after``."""

    def __init__(self, status: int, message: str, retry_after: int):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class ClientGone(Exception):
    """The client disconnected while its request was queued: nothing was run."""


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICE)  # this thread only (Linux)
    except (OSError, AttributeError):  # not permitted or not Linux: same priority, still separate threads
        pass


class HeavyWork:
    def __init__(
        self,
        slots: int,
        budget_bytes: int,
        bytes_per_pixel: float,
        base_bytes: int,
        max_wait: float,
        seconds_per_pixel: float = 1e-6,
        metrics: Any = None,
    ):
        self.slots = slots
        self.budget_bytes = budget_bytes
        self.bytes_per_pixel = bytes_per_pixel
        self.base_bytes = base_bytes
        self.max_wait = max_wait
        self.seconds_per_pixel = seconds_per_pixel  # updated from every finished job (EWMA)
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="heavy", initializer=_lower_priority)
        self._queue: list[tuple[int, float]] = []  # (ticket, pixels) waiting, FIFO
        self._running: dict[int, float] = {}  # ticket -> pixels
        self._memory: dict[int, float] = {}  # ticket -> estimated bytes, queued or running
        self._changed = asyncio.Condition()
        self._tickets = 0
        self.stats = {"admitted": 0, "refused": 0, "dropped": 0}
        self.metrics = metrics  # service/metrics.py QueueMetrics, or None

    def _count(self, outcome: str, waited: float | None = None) -> None:
        self.stats[outcome] += 1
        if self.metrics is not None:
            self.metrics.outcome(outcome, waited)

    def _depth_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.depth(len(self._queue), len(self._running))

    def memory(self, pixels: float) -> float:
        return self.base_bytes + self.bytes_per_pixel * pixels

    def on_heavy_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a heavy-work thread and wait (used at start-up to create the heavy sessions there)."""
        return self.executor.submit(fn).result()

    def idle(self) -> bool:
        """Nothing queued or running."""
        return not self._queue and not self._running

    def estimated_wait(self) -> float:
        """Seconds until a request arriving now would start: the work ahead of it, spread over the slots."""
        ahead = sum(self._running.values()) / 2 + sum(p for _, p in self._queue)  # running ones: half done, on average
        return ahead * self.seconds_per_pixel / self.slots

    def _fits(self, ticket: int) -> bool:
        if not self._running:
            return True
        return (
            len(self._running) < self.slots
            and sum(self._memory[t] for t in self._running) + self._memory[ticket] <= self.budget_bytes
        )

    async def run(
        self,
        pixels: float,
        job: Callable[[], T],
        disconnected: Callable[[], Awaitable[bool]],
        memory: float | None = None,
    ) -> T:
        """Queue ``job`` (estimated at ``pixels`` output pixels, and ``memory`` bytes at its peak:
        by default ``self.memory(pixels)``), run it on a heavy thread, return its result.

        Raises ``Overloaded`` when the estimated wait exceeds ``max_wait`` (at arrival, or after
        waiting that long) and ``ClientGone`` when the client disconnects while queued.
        """
        wait = self.estimated_wait()
        if wait > self.max_wait:
            self._count("refused")
            raise Overloaded(
                429,
                f"busy: about {wait:.0f} s of stylisation queued ahead "
                f"(the queue takes at most {self.max_wait:.0f} s); retry later",
                retry_after=max(1, math.ceil(wait - self.max_wait / 2)),
            )
        self._tickets += 1
        ticket = self._tickets
        self._queue.append((ticket, pixels))
        self._memory[ticket] = self.memory(pixels) if memory is None else memory
        self._depth_changed()
        queued_at = time.monotonic()
        deadline = queued_at + self.max_wait
        try:
            async with self._changed:
                while not (self._queue[0][0] == ticket and self._fits(ticket)):
                    if time.monotonic() > deadline:
                        self._count("refused", time.monotonic() - queued_at)
                        raise Overloaded(
                            503,
                            f"busy: waited {self.max_wait:.0f} s for a free slot; retry later",
                            retry_after=max(1, math.ceil(self.estimated_wait())),
                        )
                    if await disconnected():
                        self._count("dropped", time.monotonic() - queued_at)
                        raise ClientGone()
                    try:
                        await asyncio.wait_for(self._changed.wait(), POLL_SECONDS)
                    except TimeoutError:
                        pass
                self._queue.pop(0)
                self._running[ticket] = pixels
                self._depth_changed()
                self._changed.notify_all()  # the next in line may fit beside this one
        except BaseException:
            if (ticket, pixels) in self._queue:
                self._queue.remove((ticket, pixels))
                self._memory.pop(ticket, None)
                self._depth_changed()
                await self._notify()
            raise
        self._count("admitted", time.monotonic() - queued_at)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            future = self.executor.submit(self._run_job, job)
        except BaseException:
            self._running.pop(ticket, None)
            self._memory.pop(ticket, None)
            raise

        # The slot is freed when the job ends, not when this request does: a request cancelled by
        # the service's timeout leaves its job running to the end, and the slot stays taken till then.
        def done(_: Any) -> None:
            try:
                loop.call_soon_threadsafe(lambda: loop.create_task(self._finished(ticket, pixels, started)))
            except RuntimeError:  # the loop has closed (shutdown): nothing is waiting any more
                pass

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    @staticmethod
    def _run_job(job: Callable[[], T]) -> T:
        try:
            return job()
        finally:
            release_memory()

    async def _finished(self, ticket: int, pixels: float, started: float) -> None:
        elapsed = time.monotonic() - started
        self.seconds_per_pixel = 0.7 * self.seconds_per_pixel + 0.3 * elapsed / max(pixels, 1.0)
        self._running.pop(ticket, None)
        self._memory.pop(ticket, None)
        self._depth_changed()
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def describe(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "memory_budget_gb": round(self.budget_bytes / 1e9, 2),
            "max_queue_seconds": self.max_wait,
            "queued": len(self._queue),
            "running": len(self._running),
            "seconds_per_megapixel": round(self.seconds_per_pixel * 1e6, 3),
            **self.stats,
        }
