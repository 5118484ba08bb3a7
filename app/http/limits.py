"""Rate limits per credential (Litestar's RateLimitMiddleware), one limiter per role with the
rates of the policy's `[limits]`. They run after authentication, so the counter is the
caller's (a project's key or webhook, an officer), never an address shared by many callers.
Over the limit: 429 with `Retry-After` (the error handler adds it from the reset time).

The counters live in the app's `rate_limit` store, in memory, when the API is one process. With
several (`lethe serve --workers N`, or replicas behind a balancer) each would count on its own and
let N times the policy's rate through, so `LETHE_RATE_LIMIT_URL=redis://...` puts them in Redis:
one INCR per request, atomic across every process (`RedisWindows`). If Redis does not answer,
requests are let through (a warning is logged): the limiter protects the service, it must not
become the reason it fails.

Litestar's limiter keeps one timestamp per admitted request and re-reads and re-writes the
whole list on every call: at the webhook's 5,000/s that is ~0.2 ms per event. Ours keeps a
count per fixed window instead (same windows, same answers and headers), constant cost.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import structlog
from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.stores.base import Store
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.domain.policy import Limits
from app.services.accounts import Principal, Role

log = structlog.get_logger(__name__)
WARN_EVERY_SECONDS = 10.0  # a Redis outage is logged once per this many seconds, not per request
RETRY_AFTER_FAILURE_SECONDS = 2.0  # after a failure, requests go through without asking Redis for this long


class _Admitted(list[int]):
    """Stands for the window's history where Litestar only asks its length."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.admitted = count

    def __len__(self) -> int:
        return self.admitted


class SharedWindows(Protocol):
    async def hit(self, key: str, seconds: int) -> tuple[int, int] | None:
        """Count one request in `key`'s current window of `seconds`: (requests counted in it,
        this one included; when it resets, epoch seconds), or None when the store is down."""


class RedisWindows:
    """Fixed windows in Redis, aligned to the clock so every process shares them: INCR and
    EXPIRE in one MULTI, so concurrent processes never lose a count."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._warned = -WARN_EVERY_SECONDS
        self._down_until = 0.0  # a Redis that timed out is not asked again at once: no request waits on it

    async def hit(self, key: str, seconds: int) -> tuple[int, int] | None:
        if time.monotonic() < self._down_until:
            return None
        now = int(time.time())
        reset = now - now % seconds + seconds
        name = f"lethe:rate:{key}:{reset}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, seconds + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
            if time.monotonic() - self._warned >= WARN_EVERY_SECONDS:
                self._warned = time.monotonic()
                log.warning("rate_limit.store_unavailable", error=type(exc).__name__,
                            detail="requests are let through until the rate limit store answers")
            return None
        return int(count), reset

    async def close(self) -> None:
        await self._redis.aclose()


class CountingRateLimitMiddleware(RateLimitMiddleware):
    def __init__(self, app: Any, config: RateLimitConfig, shared: SharedWindows | None = None) -> None:
        super().__init__(app, config)
        self._shared = shared

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        if self._shared is not None:  # counted here, this request included; nothing left to write after
            counted = await self._shared.hit(key, DURATION_VALUES[self.unit])
            if counted is None:
                return CacheObject(history=_Admitted(0), reset=int(time.time()) + DURATION_VALUES[self.unit])
            return CacheObject(history=_Admitted(counted[0] - 1), reset=counted[1])
        now = int(time.time())
        cached = await store.get(key)
        if cached:
            count, _, reset = cached.decode().partition(":")
            if int(reset) > now:
                return CacheObject(history=_Admitted(int(count)), reset=int(reset))
        return CacheObject(history=_Admitted(0), reset=now + DURATION_VALUES[self.unit])

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        cache_object.history = _Admitted(len(cache_object.history) + 1)
        if self._shared is not None:
            return
        await store.set(key, f"{len(cache_object.history)}:{cache_object.reset}",
                        expires_in=max(1, cache_object.reset - int(time.time())))


def rate_limits(limits: Limits, shared: SharedWindows | None = None) -> list[DefineMiddleware]:
    """One limiter per role; `shared`: counters every API process sees (else in this process)."""
    rates = {Role.PARTNER: limits.partner_requests_per_second, Role.WEBHOOK: limits.webhook_requests_per_second,
             Role.OFFICER: limits.officer_requests_per_second}
    return [_limiter(role, per_second, shared) for role, per_second in rates.items()]


def _limiter(role: Role, per_second: int, shared: SharedWindows | None) -> DefineMiddleware:
    async def applies(request: Request[Any, Any, Any]) -> bool:  # async: Litestar runs a sync one in a thread
        user = request.scope.get("user")
        return isinstance(user, Principal) and user.role is role

    def caller(request: Request[Any, Any, Any]) -> str:
        user = request.scope.get("user")
        return user.actor if isinstance(user, Principal) else "anonymous"

    config = RateLimitConfig(rate_limit=("second", per_second), check_throttle_handler=applies,
                             identifier_for_request=caller)
    # built here rather than by `config.middleware`, which could not pass `shared`
    return DefineMiddleware(CountingRateLimitMiddleware, config=config, shared=shared)
