"""Regulatory holds: officers place and release them; every destructive step asks them first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.domain.audit import AuditRecord
from app.domain.holds import Data, Hold, Scope, covering
from app.domain.policy import Handles
from app.ports import Clock, UnitOfWorkFactory
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.identities import Identities
from app.services.policies import PolicyBook
from app.stores.clickhouse.lifecycle import Held
from app.stores.sql.models import HoldRecord
from app.stores.sql.repositories import after_cursor, encode_cursor
from app.stores.sql.uow import SqlUnitOfWork


def hold_dict(row: HoldRecord, project: str, now: datetime) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    hold = to_domain(row, project)
    return {"id": row.id, "project": project, "scope": row.scope, "target": row.target, "reason": row.reason,
            "reference": row.reference, "placed_by": row.placed_by, "placed_at": iso(row.placed_at),
            "expires_at": iso(row.expires_at), "released_by": row.released_by,
            "released_at": iso(row.released_at), "active": hold.stands(now)}


def to_domain(row: HoldRecord, project: str) -> Hold:
    return Hold(row.id, project, Scope(row.scope), row.target, row.placed_at, row.expires_at, row.released_at,
                sealed=row.sealed_at is not None)


class HoldService:
    handles: Handles = frozenset({("sql.holds", "target", "kept_as_legal_record"),
                                  ("sql.holds", "reason", "kept_as_legal_record")})

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, policies: PolicyBook, identities: Identities,
                 on_change: Callable[[], object] = lambda: None) -> None:
        self._on_change = on_change  # the erasure job seals what a new hold covers (services.held)
        self._ids = identities
        self._uow = uow
        self._clock = clock
        self._policies = policies

    # --- officers ----------------------------------------------------------------------
    def place(self, project_id: str, project: str, scope: Scope, target: str, reason: str, *,
              reference: str | None, expires_at: datetime | None, actor: str) -> dict[str, Any]:
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at: must be in the future")
        if scope is Scope.PROJECT and target != project:
            raise InvalidInput("target: a project hold names its project")
        with self._uow() as uow:
            row = HoldRecord(project_id=project_id, scope=scope.value, target=target, reason=reason,
                             reference=reference, placed_by=actor, placed_at=now, expires_at=expires_at)
            uow.session.add(row)
            uow.session.flush()
            # The audit entry names the hold, never its target (which may be a user id).
            uow.audit(AuditRecord(actor, "hold.placed", project, None,
                                  {"hold_id": row.id, "scope": scope.value, "reference": reference}))
            uow.commit()
        self._on_change()
        return hold_dict(row, project, now)

    def release(self, projects: dict[str, str], hold_id: str, *, actor: str) -> dict[str, Any]:
        now = self._clock()
        with self._uow() as uow:
            row = uow.session.get(HoldRecord, hold_id)
            if row is None or row.project_id not in projects:
                raise NotFound(f"hold {hold_id} not found")
            if row.released_at is not None:
                raise Conflict("the hold was already released")
            row.released_at, row.released_by = now, actor
            uow.audit(AuditRecord(actor, "hold.released", projects[row.project_id], None, {"hold_id": row.id}))
            uow.commit()
        self._on_change()
        return hold_dict(row, projects[row.project_id], now)

    def page(self, projects: dict[str, str], *, active: bool | None, limit: int, cursor: str | None) -> dict[str, Any]:
        now = self._clock()
        query = after_cursor(select(HoldRecord).where(HoldRecord.project_id.in_(projects)),
                             HoldRecord.placed_at, HoldRecord.id, cursor)
        items: list[dict[str, Any]] = []
        next_cursor = None
        with self._uow() as uow:
            for row in uow.session.scalars(query.order_by(HoldRecord.placed_at.desc(), HoldRecord.id.desc())):
                item = hold_dict(row, projects[row.project_id], now)
                if active is not None and item["active"] is not active:
                    continue
                if len(items) == limit:
                    last_row = items[-1]
                    next_cursor = encode_cursor(last_row["placed_at"], last_row["id"])
                    break
                items.append(item)
        return {"items": items, "next_cursor": next_cursor}

    # --- every destructive step --------------------------------------------------------
    def standing(self, uow: SqlUnitOfWork, project_ids: Sequence[str], now: datetime) -> list[Hold]:
        """Holds that may still block work in these projects (release delay included)."""
        if not project_ids:
            return []
        names = uow.projects.names(project_ids)
        rows = uow.session.scalars(select(HoldRecord).where(HoldRecord.project_id.in_(project_ids)))
        holds = [to_domain(r, names[r.project_id]) for r in rows]
        return [h for h in holds if h.stands(now, self.delay(h.project))]

    def delay(self, project: str) -> timedelta:
        return timedelta(hours=self._policies.for_project(project).hold_release_delay_hours)

    def blocking(self, holds: Sequence[Hold], data: Data, now: datetime) -> list[Hold]:
        return covering(holds, data, now, self.delay(data.project))

    def in_events(self, uow: SqlUnitOfWork, holds: Sequence[Hold]) -> Held:
        """The standing holds in the terms of the events table (users become subject ids)."""
        ids = {name: pid for pid, name in uow.projects.names(uow.projects.all_ids()).items()}
        subjects: set[str] = set()
        for h in holds:
            if h.scope is Scope.USER and h.project in ids:
                subject = self._ids.find(uow, ids[h.project], h.target)
                if subject is not None:
                    subjects.add(subject.id)
        return Held(
            projects=frozenset(h.project for h in holds if h.scope is Scope.PROJECT),
            subjects=frozenset(subjects),
            rooms=frozenset((h.project, h.target) for h in holds if h.scope is Scope.ROOM),
            messages=frozenset((h.project, h.target) for h in holds if h.scope is Scope.MESSAGE),
        )
