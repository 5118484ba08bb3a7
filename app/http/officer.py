"""Compliance officers' queue of deletion requests across their projects (CONTRACT §3
"Officers"): deadlines, overdue, timelines, and Art. 12(3) extensions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from app.domain.requests import Source
from app.http.auth import BEARER_SECURITY, officer_only
from app.http.deletion_requests import StatusFilter
from app.http.deps import OfficerRequestsDep
from app.http.schemas import Cursor, ExtensionIn, Limit, aware
from app.services.accounts import Principal
from app.services.views import OfficerRequestOut, OfficerRequestPage


class OfficerController(Controller):
    security = BEARER_SECURITY
    path = "/v1/officer/deletion-requests"
    guards = [officer_only]
    tags = ["officers"]

    @get("/", sync_to_thread=True)
    def queue(self, request: Request[Principal, Any, Any], officer_requests: OfficerRequestsDep,
              project: FromQuery[str | None] = None, status: StatusFilter = None,
              source: FromQuery[Source | None] = None, overdue: FromQuery[bool | None] = None,
              due_before: FromQuery[datetime | None] = None, limit: Limit = 50,
              cursor: Cursor = None) -> OfficerRequestPage:
        """Requests of the officer's projects, newest first, each with `due_by`, `overdue` and
        its `timeline` (the audit entries of that request)."""
        page = officer_requests.page(
            request.user.scoped(project), status=status.value if status else None,
            source=source.value if source else None, overdue=overdue,
            due_before=aware(due_before, "due_before"), limit=limit, cursor=cursor)
        return page

    @post("/{request_id:str}/extend", sync_to_thread=True, status_code=200)
    def extend(self, request: Request[Principal, Any, Any], request_id: FromPath[str], data: JSONBody[ExtensionIn],
               officer_requests: OfficerRequestsDep) -> OfficerRequestOut:
        """Extend the Art. 12(3) deadline by 1 or 2 months (2 in all), with a reason; audited."""
        body = officer_requests.extend(request.user.projects, request_id, data.months, data.reason,
                                       actor=request.user.actor)
        return body
