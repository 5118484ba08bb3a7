"""Bearer-token authentication (middleware) and role guards.

A partner api_key acts on its own project, a webhook_token may only post events, an officer
token reads and places holds on its projects. Anything else: 401.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware

from app.services.accounts import AccountService, Principal, Role
from app.services.errors import NotFound

PUBLIC_PATHS = ["^/healthz$", "^/readyz$", "^/metrics", "^/schema"]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app: Any, accounts: AccountService, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.accounts = accounts

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("missing bearer token (Authorization: Bearer <token>)")
        principal = await _authenticate(self.accounts, token.strip())
        if principal is None:
            raise NotAuthorizedException("invalid or revoked token")
        return AuthenticationResult(user=principal, auth=token)


async def _authenticate(accounts: AccountService, token: str) -> Principal | None:
    hit, principal = accounts.cached(token)  # most calls: no thread hop, no database
    if hit:
        return principal
    return await to_thread.run_sync(accounts.authenticate, token)


def auth_middleware(accounts: AccountService) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, accounts=accounts, exclude=PUBLIC_PATHS)


def _require(role: Role) -> Any:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        _allow(connection, role)

    guard.__name__ = f"require_{role.value}"
    return guard


def _allow(connection: ASGIConnection[Any, Any, Any, Any], *roles: Role) -> None:
    """No or unknown credentials: 401; a known token of another role: 403 (CONTRACT §3)."""
    if connection.scope.get("method") == "OPTIONS":
        return  # CORS preflight and OPTIONS carry no credentials: the auth middleware skips them
    wanted = " or ".join(r.value for r in roles)
    if not isinstance(connection.user, Principal):
        raise NotAuthorizedException(f"this endpoint needs a {wanted} token")
    if connection.user.role not in roles:
        raise PermissionDeniedException(f"this endpoint needs a {wanted} token, not a {connection.user.role} token")


def partner_or_officer(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _allow(connection, Role.PARTNER, Role.OFFICER)


partner_only = _require(Role.PARTNER)
officer_only = _require(Role.OFFICER)
webhook_only = _require(Role.WEBHOOK)


def scoped_projects(principal: Principal, project: str | None) -> dict[str, str]:
    """The projects (id -> name) a request means: all of the token's, or the one named (404
    when the token does not cover it: never reveal that it exists)."""
    if project is None:
        return dict(principal.projects)
    chosen = {pid: name for pid, name in principal.projects.items() if name == project}
    if not chosen:
        raise NotFound(f"project {project} not found")
    return chosen
