"""Rate limits per credential (Litestar's RateLimitMiddleware), one limiter per role with the
rates of the policy's `[limits]`. They run after authentication, so the counter is the
caller's (a project's key or webhook, an officer), never an address shared by many callers.
Over the limit: 429 with `Retry-After` (the error handler adds it from the reset time).

The counters live in the app's `rate_limit` store: in memory for one process (the only
deployment today); several API processes need a shared store there (issue 9).

Litestar's limiter keeps one timestamp per admitted request and re-reads and re-writes the
whole list on every call: at the webhook's 5,000/s that is ~0.2 ms per event. Ours keeps a
count per fixed window instead (same windows, same answers and headers), constant cost.
"""

from __future__ import annotations

from time import time
from typing import Any

from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.stores.base import Store

from app.domain.policy import Limits
from app.services.accounts import Principal, Role


class _Admitted(list[int]):
    """Stands for the window's history where Litestar only asks its length."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.admitted = count

    def __len__(self) -> int:
        return self.admitted


class CountingRateLimitMiddleware(RateLimitMiddleware):
    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        now = int(time())
        cached = await store.get(key)
        if cached:
            count, _, reset = cached.decode().partition(":")
            if int(reset) > now:
                return CacheObject(history=_Admitted(int(count)), reset=int(reset))
        return CacheObject(history=_Admitted(0), reset=now + DURATION_VALUES[self.unit])

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        cache_object.history = _Admitted(len(cache_object.history) + 1)
        await store.set(key, f"{len(cache_object.history)}:{cache_object.reset}",
                        expires_in=max(1, cache_object.reset - int(time())))


def rate_limits(limits: Limits) -> list[DefineMiddleware]:
    rates = {Role.PARTNER: limits.partner_requests_per_second, Role.WEBHOOK: limits.webhook_requests_per_second,
             Role.OFFICER: limits.officer_requests_per_second}
    return [_limiter(role, per_second) for role, per_second in rates.items()]


def _limiter(role: Role, per_second: int) -> DefineMiddleware:
    async def applies(request: Request[Any, Any, Any]) -> bool:  # async: Litestar runs a sync one in a thread
        user = request.scope.get("user")
        return isinstance(user, Principal) and user.role is role

    def caller(request: Request[Any, Any, Any]) -> str:
        user = request.scope.get("user")
        return user.actor if isinstance(user, Principal) else "anonymous"

    return RateLimitConfig(rate_limit=("second", per_second), check_throttle_handler=applies,
                           identifier_for_request=caller, middleware_class=CountingRateLimitMiddleware).middleware
