"""API keys and a per-key rate limit (ASGI middleware, before any other work is done).

With keys configured (``ATELIER_API_KEYS`` / ``ATELIER_API_KEYS_FILE``), every guarded path needs
``Authorization: Bearer <key>``; otherwise 401 with ``WWW-Authenticate: Bearer``, saying whether
the header was missing, malformed or held an unknown key. Keys are compared in constant time
against every configured key (``hmac.compare_digest``), so the time taken tells nothing about
which or how much of a key matched, and a key is never logged or echoed. The probes stay open;
``/metrics`` is guarded only when ``ATELIER_METRICS_AUTH=key``.

``ATELIER_RATE_LIMIT`` (requests a minute) gives each key a token bucket of that many requests,
refilled continuously; a request finding it empty gets 429 with ``Retry-After`` (the seconds until
a token is back). Without keys, the bucket is per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable

from service.errors import refuse

MAX_BUCKETS = 10_000  # client addresses remembered at once (keys are few; addresses are not)


class KeyGuard:
    def __init__(
        self,
        app,
        keys: Iterable[str],
        guarded_paths: Iterable[str],
        rate_limit_per_minute: float = 0.0,
    ):
        self.app = app
        # digests, so that every comparison takes the same time whatever the key's length
        self.digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self.guarded = frozenset(guarded_paths)
        self.buckets = TokenBuckets(rate_limit_per_minute) if rate_limit_per_minute > 0 else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.guarded or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("", 0)
        identity = f"address:{client[0]}"
        if self.digests:
            problem, identity = self.check(dict(scope["headers"]).get(b"authorization"))
            if problem is not None:
                await refuse(
                    receive, send, 401, "authorization", problem, {"WWW-Authenticate": 'Bearer realm="atelier"'}
                )
                return
        if self.buckets is not None and (wait := self.buckets.take(identity)) > 0:
            await refuse(
                receive,
                send,
                429,
                "service",
                f"rate limit of {self.buckets.per_minute:g} requests a minute reached; retry in {math.ceil(wait)} s",
                {"Retry-After": str(math.ceil(wait))},
            )
            return
        await self.app(scope, receive, send)

    def check(self, header: bytes | None) -> tuple[str | None, str]:
        """(the problem, None when the key is good; the caller's identity for the rate limit)."""
        if header is None:
            return "this service needs an API key: send `Authorization: Bearer <key>`", ""
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return "malformed Authorization header: use `Authorization: Bearer <key>`", ""
        digest = hashlib.sha256(token).digest()
        matches = [hmac.compare_digest(digest, known) for known in self.digests]  # all of them, always
        if not any(matches):
            return "unknown API key", ""
        return None, f"key:{matches.index(True)}"


class TokenBuckets:
    """One bucket of ``per_minute`` tokens per identity, refilled at ``per_minute / 60`` a second."""

    def __init__(self, per_minute: float, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self.state: dict[str, tuple[float, float]] = {}  # identity -> (tokens, when)

    def take(self, identity: str) -> float:
        """0 when a token was taken, else the seconds until one is back."""
        now = self.clock()
        tokens, then = self.state.get(identity, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self.state[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self.state) >= MAX_BUCKETS and identity not in self.state:
            self.state.clear()  # forget the idle ones rather than grow without bound
        self.state[identity] = (tokens - 1.0, now)
        return 0.0
