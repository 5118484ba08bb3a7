"""Bearer-token authentication (middleware) and role guards.

A partner api_key acts on its own project, a webhook_token may only post events, an officer
token reads and places holds on its projects. Anything else: 401.

The events webhook has two more ways in (CONTRACT "Events webhook"): the project's secret URL
`/v1/hooks/{secret}`, authenticated here from the path, and a Standard Webhooks signature on
`POST /v1/events`, which covers the body and so is verified by the handler (`webhook_sender`);
this middleware only lets such a request through without an Authorization header.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware

from app.domain.webhooks import BEARER, HOOKS_PATH
from app.services.accounts import AccountService, Principal, Role
from app.services.errors import Unauthenticated
from app.services.webhooks import HookProject, WebhookAuthService

# OpenAPI: the routes that take `Authorization: Bearer <token>` (partner api_key, webhook_token
# or officer token, as each route says) declare this scheme (components in app.http.app)
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
PUBLIC_PATHS = ["^/healthz$", "^/readyz$", "^/metrics", "^/schema", "^/console"]  # the console has its own login


EVENTS_PATHS = frozenset({"/v1/events", "/v1/events/"})
SIGNED = "signed"  # AuthenticationResult.auth of a request whose signature the handler verifies
MISSING_EVENTS_AUTH = ("missing credentials: send Authorization: Bearer <webhook_token>, or sign the delivery "
                       "(webhook-id, webhook-timestamp, webhook-signature), or post to the project's secret URL")


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app: Any, accounts: AccountService, webhooks: WebhookAuthService, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.accounts = accounts
        self.webhooks = webhooks

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        path: str = connection.scope["path"]
        if path.startswith(HOOKS_PATH):
            return await self._secret_url(path[len(HOOKS_PATH):].strip("/"))
        header = connection.headers.get("authorization")
        if path in EVENTS_PATHS and header is None:
            if connection.scope.get("method") == "POST" and "webhook-signature" in connection.headers:
                return AuthenticationResult(user=None, auth=SIGNED)  # verified with the body by the handler
            raise NotAuthorizedException(MISSING_EVENTS_AUTH)
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("missing bearer token (Authorization: Bearer <token>)")
        principal = await _authenticate(self.accounts, token.strip())
        if principal is None:
            raise NotAuthorizedException("invalid or revoked token")
        return AuthenticationResult(user=principal, auth=token)

    async def _secret_url(self, secret: str) -> AuthenticationResult:
        """The project's secret URL stands for a webhook token; the secret is never echoed."""
        hit, project = self.webhooks.cached_url(secret)
        if not hit:
            project = await to_thread.run_sync(self.webhooks.by_url, secret)
        if project is None:
            raise NotAuthorizedException("unknown or expired webhook URL (lethe project rotate-webhook-url "
                                         "gives a project a new one)")
        return AuthenticationResult(user=Principal(Role.WEBHOOK, project.name, {project.project_id: project.name}),
                                    auth=project)


async def webhook_sender(connection: ASGIConnection[Any, Any, Any, Any], webhooks: WebhookAuthService,
                         body: bytes) -> tuple[HookProject, str | None]:
    """Who posts events to /v1/events and by which method the project must accept: a bearer
    webhook_token, or a Standard Webhooks signature over `body` (then also its webhook-id)."""
    if connection.auth == SIGNED:
        return await to_thread.run_sync(webhooks.verify_signed, connection.headers, body)
    _allow(connection, Role.WEBHOOK)
    principal: Principal = connection.user
    hit, project = webhooks.cached("id", principal.project_id)
    if not hit:
        project = await to_thread.run_sync(webhooks.find, "id", principal.project_id)
    if project is None:
        raise Unauthenticated("invalid or revoked token")
    project.require(BEARER)
    return project, None


async def _authenticate(accounts: AccountService, token: str) -> Principal | None:
    hit, principal = accounts.cached(token)  # most calls: no thread hop, no database
    if hit:
        return principal
    return await to_thread.run_sync(accounts.authenticate, token)


def auth_middleware(accounts: AccountService, webhooks: WebhookAuthService) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, accounts=accounts, webhooks=webhooks, exclude=PUBLIC_PATHS)


# Guards are `async def` although they do no I/O: Litestar runs a sync guard in a worker
# thread, one thread hop per request for a few attribute reads.
def _require(role: Role) -> Any:
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        _allow(connection, role)

    guard.__name__ = f"require_{role.value}"
    return guard


def _allow(connection: ASGIConnection[Any, Any, Any, Any], *roles: Role) -> None:
    """No or unknown credentials: 401; a known token of another role: 403 (CONTRACT §3)."""
    if connection.scope.get("method") == "OPTIONS":
        return  # CORS preflight and OPTIONS carry no credentials: the auth middleware skips them
    wanted = _a(" or ".join(r.value for r in roles))
    if not isinstance(connection.user, Principal):
        raise NotAuthorizedException(f"this endpoint needs {wanted} token")
    if connection.user.role not in roles:
        raise PermissionDeniedException(f"this endpoint needs {wanted} token, not {_a(connection.user.role)} token")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {noun}"


async def partner_or_officer(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _allow(connection, Role.PARTNER, Role.OFFICER)


partner_only = _require(Role.PARTNER)
officer_only = _require(Role.OFFICER)
webhook_only = _require(Role.WEBHOOK)


