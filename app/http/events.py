"""The chat platform's events webhook, and the partner's view of what was rejected."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post

from app.http.auth import partner_only, webhook_only
from app.http.deps import ContainerDep
from app.http.schemas import Cursor, Limit, RejectedPage
from app.services.accounts import Principal


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]

    @post("/", guards=[webhook_only], status_code=202)
    async def ingest(self, request: Request[Principal, Any, Any], container: ContainerDep) -> Response[Any]:
        """One envelope or a JSON array of up to 1,000. 202 `{"accepted", "rejected"}` once stored;
        what fails validation is kept (dead letter) and reported by index; 400 if nothing was accepted."""
        body = await request.body()
        principal = request.user
        result = await container.ingest.ingest_async(principal.project_id, principal.projects[principal.project_id],
                                                     body)
        return Response(result.as_dict(), status_code=result.status_code)

    @get("/rejected", guards=[partner_only], sync_to_thread=True)
    def rejected(self, request: Request[Principal, Any, Any], container: ContainerDep, limit: Limit = 50,
                 cursor: Cursor = None) -> RejectedPage:
        """Dead-letter entries (newest first) with the reason each was rejected."""
        return msgspec.convert(container.dead_letters.page(request.user.project_id, limit, cursor), RejectedPage)
