"""Partner API: deletion requests (CONTRACT §3). Thin: parse, call the service, shape the reply."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from app.domain.requests import Status
from app.http.auth import BEARER_SECURITY, partner_only
from app.http.deps import BatchesDep, DeletionsDep
from app.http.schemas import BatchIn, Cursor, DeletionRequestIn, Limit
from app.services.accounts import Principal
from app.services.views import BatchOut, BatchProgress, DeletionRequestOut, DeletionRequestPage

StatusFilter = Annotated[Status | None, QueryParameter(description="only requests in this status")]
# a client's key for retrying safely; an empty one would be one key shared by every such call
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=200)]


class DeletionRequestController(Controller):
    security = BEARER_SECURITY
    path = "/v1/deletion-requests"
    guards = [partner_only]
    tags = ["deletion requests"]

    @post("/", status_code=202, responses={
        200: ResponseSpec(data_container=DeletionRequestOut, description="the user's already open request"),
    })
    async def create(
        self, request: Request[Principal, Any, Any], data: JSONBody[DeletionRequestIn], deletions: DeletionsDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[DeletionRequestOut]:
        """Erase a user: `grace` (30 days, restorable) or `immediate`. 200 with the open request
        when the user already has one. Same Idempotency-Key and body give the same response."""
        principal = request.user
        outcome = await deletions.request_async(
            principal.project_id, data.user_id, data.mode, data.reason, actor=principal.actor,
            idempotency_key=idempotency_key,
        )
        return Response(outcome.body, status_code=202 if outcome.created else 200)

    @post("/batch", status_code=202, sync_to_thread=True)
    def create_batch(
        self, request: Request[Principal, Any, Any], data: JSONBody[BatchIn], batches: BatchesDep,
        idempotency_key: IdempotencyKey = None,
    ) -> BatchOut:
        """Erase up to 10,000 users in one call, in one transaction. Each listed user id gets an
        outcome: `created`, `open` (already had an open request) or `invalid` with the reason.
        More than 10,000 ids, or none, rejects the whole batch (400). Same Idempotency-Key and
        body give the same response."""
        answer = batches.submit(request.user.project_id, data.user_ids, data.mode, data.reason,
                                actor=request.user.actor, idempotency_key=idempotency_key)
        return answer

    @get("/batch/{batch_id:str}", sync_to_thread=True)
    def batch_progress(self, request: Request[Principal, Any, Any], batch_id: FromPath[str],
                       batches: BatchesDep) -> BatchProgress:
        """Where a batch's requests are now: how many in each status."""
        return batches.progress(request.user.project_id, batch_id)

    @get("/{request_id:str}", sync_to_thread=True)
    def read(
        self, request: Request[Principal, Any, Any], request_id: FromPath[str], deletions: DeletionsDep
    ) -> DeletionRequestOut:
        """One request of this project: status, deadlines, holds, what holds keep, and evidence."""
        return deletions.get(request.user.project_id, request_id)

    @get("/", sync_to_thread=True)
    def list(
        self, request: Request[Principal, Any, Any], deletions: DeletionsDep, user_id: FromQuery[str | None] = None,
        status: StatusFilter = None, limit: Limit = 50, cursor: Cursor = None,
    ) -> DeletionRequestPage:
        """This project's requests, newest first; filter by user id or status; keyset pages."""
        page = deletions.page(request.user.project_id, user_id=user_id,
                              status=status.value if status else None, limit=limit, cursor=cursor)
        return page

    @post("/{request_id:str}/restore", sync_to_thread=True, status_code=200)
    def restore(self, request: Request[Principal, Any, Any], request_id: FromPath[str],
                deletions: DeletionsDep) -> DeletionRequestOut:
        """Restore a user during grace; 409 saying why otherwise."""
        body = deletions.restore(request.user.project_id, request_id, actor=request.user.actor)
        return body
