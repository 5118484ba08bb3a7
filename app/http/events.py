"""The chat platform's events webhook, and the partner's view of what was rejected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from app.domain.webhooks import URL
from app.http.auth import BEARER_SECURITY, partner_only, webhook_sender
from app.http.deps import DeadLettersDep, IngestDep, WebhooksDep
from app.http.schemas import Cursor, ErrorBody, Limit
from app.services.accounts import Principal
from app.services.ingest import IngestResult
from app.services.views import IngestOut, RejectedPage
from app.services.webhooks import HookProject

_ENVELOPE = Schema(
    type=OpenAPIType.OBJECT, required=["event", "value"],
    properties={
        "event": Schema(type=OpenAPIType.STRING, description="the event's name, e.g. message_sent"),
        "value": Schema(type=OpenAPIType.OBJECT, required=["project"], description=(
            "the event's properties: `project` (this webhook's project), `user_id` (frontend) or "
            "`external_user_id` (backend) or an admin's `user_id`, `created_at` (ISO 8601, UTC), and the "
            "event's own properties (see the platform's event reference)"),
            properties={"project": Schema(type=OpenAPIType.STRING),
                        "user_id": Schema(type=OpenAPIType.STRING),
                        "external_user_id": Schema(type=OpenAPIType.STRING),
                        "created_at": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)}),
        "key": Schema(type=OpenAPIType.STRING, description="the platform's delivery key (optional)"),
    },
)
_EXAMPLE = {"event": "message_sent", "value": {"project": "acme", "user_id": "u-1", "message_id": "m-1",
                                               "room": "r-1", "text": "hello", "created_at": "2026-11-21T10:00:00Z"}}


@dataclass
class _EventsOperation(Operation):
    """The webhook reads its body raw (a body that does not parse is kept as a dead letter), so its
    schema is documented here: one envelope, or an array of up to 1,000."""

    def __post_init__(self) -> None:
        schema = Schema(one_of=[_ENVELOPE, Schema(type=OpenAPIType.ARRAY, items=_ENVELOPE, max_items=1000)])
        self.request_body = RequestBody(required=True, description="one envelope or an array of up to 1,000",
                                        content={"application/json": OpenAPIMediaType(
                                            schema=schema, examples={"message_sent": Example(value=_EXAMPLE)})})


def _answers(*codes: int) -> dict[int, ResponseSpec]:
    """What the webhook routes answer besides 202: a 400 in the webhook's own shape (nothing was
    accepted; every envelope was kept as a dead letter), and errors in the common shape."""
    errors = {401: "no or unknown credentials (token, signature or secret URL)",
              403: "a credential this project does not accept, or the wrong role",
              413: "the body is larger than 10 MiB", 429: "too many requests; see Retry-After",
              503: "the ingest outbox is full or the SQL store does not answer: nothing was stored; see Retry-After"}
    return {400: ResponseSpec(data_container=IngestOut, description="nothing was accepted: every envelope was "
                              "rejected (each kept as a dead letter, reported by index)"),
            **{code: ResponseSpec(data_container=ErrorBody, description=errors[code]) for code in codes}}


def _answer(result: IngestResult) -> Response[IngestOut]:
    """202 once stored; 400 when every envelope was rejected (all kept as dead letters)."""
    return Response(msgspec.convert(result.as_dict(), IngestOut), status_code=400 if result.nothing_accepted else 202)


class EventsController(Controller):
    security = BEARER_SECURITY
    path = "/v1/events"
    tags = ["events"]

    @post("/", status_code=202, operation_class=_EventsOperation, responses=_answers(503))
    async def ingest(self, request: Request[Principal, Any, Any], ingest: IngestDep,
                     webhooks: WebhooksDep) -> Response[IngestOut]:
        """One envelope or a JSON array of up to 1,000. 202 `{"accepted", "duplicates", "rejected"}` once
        stored; what fails validation is kept (dead letter) and reported by index; 400 if nothing was
        accepted. Authenticated by the webhook_token (bearer) or a Standard Webhooks signature
        (webhook-id, webhook-timestamp, webhook-signature; a repeated webhook-id is a duplicate)."""
        body = await request.body()
        project, delivery_id = await webhook_sender(request, webhooks, body)
        result = await ingest.ingest_async(project.project_id, project.name, body, delivery_id=delivery_id)
        return _answer(result)

    @get("/rejected", guards=[partner_only], sync_to_thread=True)
    def rejected(self, request: Request[Principal, Any, Any], dead_letters: DeadLettersDep,
                 limit: Limit = 50,
                 cursor: Cursor = None) -> RejectedPage:
        """Dead-letter entries (newest first) with the reason each was rejected."""
        return dead_letters.page(request.user.project_id, limit, cursor)


class HooksController(Controller):
    path = "/v1/hooks"
    tags = ["events"]

    @post("/{secret:str}", status_code=202, operation_class=_EventsOperation,
          responses=_answers(401, 403, 413, 429, 503))
    async def ingest_by_secret_url(self, request: Request[Principal, HookProject, Any],
                                   ingest: IngestDep) -> Response[IngestOut]:
        """The project's secret URL (`webhook_url_path`): the same bodies and answers as `POST /v1/events`,
        for senders that cannot set headers. The path is the credential: keep it secret."""
        project = request.auth  # the middleware found it by the path's secret (never logged or echoed)
        project.require(URL)
        body = await request.body()
        result = await ingest.ingest_async(project.project_id, project.name, body)
        return _answer(result)
