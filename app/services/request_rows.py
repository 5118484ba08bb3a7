"""A deletion request row as the state machine sees it (`state_of`, `apply_state`) and as the API
shows it (`to_view`, `officer_view`): the one mapping every service that moves or shows requests
uses (creation and restore, the erasure jobs, the access report, callbacks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from app.domain import requests as lifecycle
from app.domain.audit import subject_hash
from app.domain.requests import Mode, RequestState, Status, Step
from app.models import AuditEntry, DeletionRequest
from app.services.audit import entry_view
from app.services.views import DeletionRequestOut, OfficerRequestOut, iso


def audit_subject(row: DeletionRequest, key: bytes, project: str, user_id: str | None) -> str | None:
    """The keyed hash a request's audit entries carry: the one it keeps (every request since
    migration 4cd90c21ecc8), else its user's while linked (older requests), else none."""
    return row.audit_subject or (subject_hash(key, project, user_id) if user_id else None)


def state_of(row: DeletionRequest) -> RequestState:
    return RequestState(Status(row.status), Mode(row.mode), row.grace_until, Step(row.next_step))


def apply_state(row: DeletionRequest, state: RequestState) -> None:
    row.status, row.next_step = state.status.value, state.next_step.value


def to_view(row: DeletionRequest, project_name: str, user_id: str | None, now: datetime) -> DeletionRequestOut:
    """The request as the API shows it (`user_id` None where the caller must not see it)."""
    return DeletionRequestOut(
        id=row.id, project=project_name, user_id=user_id, mode=row.mode, source=row.source, status=row.status,
        requested_at=row.requested_at.isoformat(), grace_until=row.grace_until.isoformat(),
        due_by=row.due_by.isoformat(), overdue=lifecycle.overdue(Status(row.status), row.due_by, now),
        due_extended_months=row.due_extended_months, anonymised_at=iso(row.anonymised_at),
        completed_at=iso(row.completed_at), restored_at=iso(row.restored_at),
        holds=list(row.evidence.get("_holds", [])), kept=list(row.evidence.get("_kept", [])),
        evidence={k: v for k, v in row.evidence.items() if not k.startswith("_")}, detail=row.detail)


def officer_view(row: DeletionRequest, project_name: str, user_id: str | None, now: datetime,
                  timeline: Sequence[AuditEntry]) -> OfficerRequestOut:
    return OfficerRequestOut(**msgspec.structs.asdict(to_view(row, project_name, user_id, now)),
                             timeline=[entry_view(e) for e in timeline],
                             due_extension_reason=row.due_extension_reason)
