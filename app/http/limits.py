"""Rate limits per credential (Litestar's RateLimitMiddleware), one limiter per role with the
rates of the policy's `[limits]`. They run after authentication, so the counter is the
caller's (a project's key or webhook, an officer), never an address shared by many callers.
Over the limit: 429 with `Retry-After` (the error handler adds it from the reset time).

The counters live in the app's `rate_limit` store: in memory for one process (the only
deployment today); several API processes need a shared store there (issue 9).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig

from app.domain.policy import Limits
from app.services.accounts import Principal, Role


def rate_limits(limits: Limits) -> list[DefineMiddleware]:
    rates = {Role.PARTNER: limits.partner_requests_per_second, Role.WEBHOOK: limits.webhook_requests_per_second,
             Role.OFFICER: limits.officer_requests_per_second}
    return [_limiter(role, per_second) for role, per_second in rates.items()]


def _limiter(role: Role, per_second: int) -> DefineMiddleware:
    def applies(request: Request[Any, Any, Any]) -> bool:
        user = request.scope.get("user")
        return isinstance(user, Principal) and user.role is role

    def caller(request: Request[Any, Any, Any]) -> str:
        user = request.scope.get("user")
        return user.actor if isinstance(user, Principal) else "anonymous"

    return RateLimitConfig(rate_limit=("second", per_second), check_throttle_handler=applies,
                           identifier_for_request=caller).middleware
