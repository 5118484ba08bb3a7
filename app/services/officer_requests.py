"""The compliance officers' side of deletion requests: their queue across projects, one
request with its timeline, and the Art. 12(3) deadline they may extend. Partners' requests are
created, read and restored in app.services.deletion."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord
from app.domain.policy import Handles
from app.domain.requests import Status, TransitionRefused
from app.ports import UnitOfWorkFactory
from app.retry import retry_transient
from app.services.errors import Conflict, NotFound
from app.services.identities import Identities
from app.services.request_rows import audit_subject, officer_view
from app.services.views import OfficerRequestOut, OfficerRequestPage


class OfficerRequests:
    """`projects` is always the officer's own: project id -> name (Principal.projects)."""

    handles: Handles = frozenset({("sql.deletion_requests", "due_extension_reason", "kept_as_legal_record")})

    def __init__(self, uow: UnitOfWorkFactory, identities: Identities, secret_key: bytes) -> None:
        self._uow = uow
        self._ids = identities
        self._key = secret_key

    def page(self, projects: Mapping[str, str], *, status: str | None, source: str | None,
             overdue: bool | None, due_before: datetime | None, limit: int, cursor: str | None) -> OfficerRequestPage:
        """Requests across an officer's projects, each with its deadline and its timeline (the
        audit entries that name it). User ids as the partner sent them, like the access report."""
        with self._uow() as uow:
            now = uow.now()
            rows, next_cursor = uow.requests.across(list(projects), now=now, status=status, source=source,
                                                    overdue=overdue, due_before=due_before, limit=limit,
                                                    cursor=cursor)
            users = self._ids.user_ids_of(uow, [r.subject_id for r in rows])
            timelines = uow.audit_log.of_requests(sorted(projects.values()), [r.id for r in rows])
            items = [officer_view(r, projects[r.project_id], users.get(r.subject_id), now, timelines.get(r.id, []))
                     for r in rows]
        return OfficerRequestPage(items, next_cursor)

    def get(self, projects: Mapping[str, str], request_id: str) -> OfficerRequestOut:
        """One request of the officer's projects, with its deadline, its timeline and the user id."""
        with self._uow() as uow:
            row = next((r for pid in projects if (r := uow.requests.get(pid, request_id))), None)
            if row is None:
                raise NotFound(f"deletion request {request_id} not found")
            user = self._ids.user_id(uow, uow.subjects.get(row.subject_id))
            timeline = uow.audit_log.of_requests(sorted(projects.values()), [row.id]).get(row.id, [])
            return officer_view(row, projects[row.project_id], user, uow.now(), timeline)

    def extend(self, projects: Mapping[str, str], request_id: str, months: int, reason: str, *,
               actor: str) -> OfficerRequestOut:
        """Art. 12(3): an officer extends a request's deadline by 1 or 2 more months (2 in all),
        with a reason; audited (the reason stays on the request, not in the log). Answers with
        the request as officers see it: the reason and the timeline with this extension."""
        def extend() -> None:
            with self._uow() as uow:
                row = next((r for pid in projects if (r := uow.requests.get(pid, request_id, lock=True))), None)
                if row is None:
                    raise NotFound(f"deletion request {request_id} not found")
                if Status(row.status) not in lifecycle.OPEN_STATUSES:
                    raise Conflict(f"the request is {row.status}: only an open request has a deadline to extend")
                try:
                    row.due_by, row.due_extended_months = lifecycle.extended_due_by(
                        row.due_by, row.due_extended_months, months)
                except TransitionRefused as exc:
                    raise Conflict(str(exc)) from None
                row.due_extension_reason = reason
                name = projects[row.project_id]
                user_id = self._ids.user_id(uow, uow.subjects.get(row.subject_id))  # None once purged
                uow.audit(AuditRecord(actor, "deletion_request.deadline_extended", name,
                                      audit_subject(row, self._key, name, user_id),
                                      {"request_id": row.id, "months": months, "due_by": row.due_by.isoformat()}))
                uow.commit()

        retry_transient(extend)
        return self.get(projects, request_id)
