"""Partners register where each transition of their requests is POSTed (CONTRACT "Callbacks")."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.params import JSONBody, QueryParameter

from app.http.auth import BEARER_SECURITY, partner_only
from app.http.deps import CallbacksDep
from app.http.schemas import Cursor, Limit
from app.services.accounts import Principal
from app.services.views import CallbackOut, DeliveryPage


class CallbackIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=r"^https?://[^\x00\s]+$",
                                     examples=["https://partner.example/lethe/callbacks"])]


State = Annotated[str | None, QueryParameter(name="state", description="pending or dead (failed for 3 days)")]


class CallbackController(Controller):
    security = BEARER_SECURITY
    path = "/v1/callback"
    guards = [partner_only]
    tags = ["callbacks"]

    @put("/", sync_to_thread=True, status_code=200)
    def register(self, request: Request[Principal, Any, Any], data: JSONBody[CallbackIn],
                 callback_service: CallbacksDep) -> CallbackOut:
        """Each transition of the project's requests (`in_grace`, `on_hold`, `completed`,
        `restored`, `failed`) is POSTed to this URL as `{"type": "deletion_request.<status>",
        "request": DeletionRequest}`, signed with the Standard Webhooks scheme under the
        returned `callback_secret` (shown once; registering again replaces both), at least once,
        with a stable `webhook-id` per transition, retried with backoff for 3 days."""
        return callback_service.register(request.user.project_id, data.url, actor=request.user.actor)

    @get("/deliveries", sync_to_thread=True)
    def deliveries(self, request: Request[Principal, Any, Any], callback_service: CallbacksDep,
                   delivery_state: State = None, limit: Limit = 50, cursor: Cursor = None) -> DeliveryPage:
        """Callbacks not delivered yet: retrying (`pending`) or given up after 3 days (`dead`)."""
        return callback_service.page(request.user.project_id, state=delivery_state, limit=limit, cursor=cursor)
