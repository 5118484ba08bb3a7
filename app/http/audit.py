"""Compliance officers: query, export and verify the audit log (CONTRACT §3 "Audit")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from litestar import Controller, Request, get
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import FromQuery
from litestar.response import Stream

from app.http.auth import BEARER_SECURITY, officer_only
from app.http.deps import AuditDep
from app.http.schemas import Cursor, Limit, aware
from app.services.accounts import Principal
from app.services.views import AuditPage, CheckpointPage, VerifyOut


def _projects(principal: Principal, project: str | None) -> list[str]:
    return sorted(principal.scoped(project).values())


@dataclass
class _ExportOperation(Operation):
    """The export answers JSON lines or CSV (`format`): both are documented."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            schema = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
            ok.content = {"application/x-ndjson": schema, "text/csv": schema}


class AuditController(Controller):
    security = BEARER_SECURITY
    path = "/v1/audit"
    guards = [officer_only]
    tags = ["audit"]

    @get("/", sync_to_thread=True)
    def list(
        self, request: Request[Principal, Any, Any], audit_service: AuditDep, user_id: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None, since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None, project: FromQuery[str | None] = None, limit: Limit = 50,
        cursor: Cursor = None,
    ) -> AuditPage:
        """Entries oldest first. `user_id` is hashed the way the log stores subjects."""
        page = audit_service.page(_projects(request.user, project), user_id=user_id, action=action,
                                  since=aware(since, "since"), until=aware(until, "until"), limit=limit,
                                  cursor=cursor)
        return page

    @get("/verify", sync_to_thread=True)
    def verify(self, audit_service: AuditDep) -> VerifyOut:
        result = audit_service.verify()
        return VerifyOut(result.ok, result.entries, result.head, result.first_bad_seq, result.problem)

    @get("/checkpoints", sync_to_thread=True)
    def checkpoints(self, audit_service: AuditDep, limit: Limit = 50,
                    cursor: Cursor = None) -> CheckpointPage:
        """The signed heads of the chain (newest first): keep them outside Lethe, then
        `lethe audit verify --checkpoint FILE` proves the log was not truncated or rewritten."""
        return audit_service.checkpoints(limit, cursor)

    @get("/export", sync_to_thread=True, operation_class=_ExportOperation)
    def export(
        self, request: Request[Principal, Any, Any], audit_service: AuditDep,
        format: FromQuery[Literal["jsonl", "csv"]] = "jsonl", user_id: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None, since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None, project: FromQuery[str | None] = None,
    ) -> Stream:
        """The entries `GET /v1/audit` would list with the same filters, all of them, as a download."""
        # checked here, before the stream starts: a bad parameter is a 400, not a broken download
        lines = audit_service.export(_projects(request.user, project), format, user_id=user_id, action=action,
                                     since=aware(since, "since"), until=aware(until, "until"))
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return Stream(lines, media_type=media,
                      headers={"Content-Disposition": f'attachment; filename="lethe-audit.{format}"'})
