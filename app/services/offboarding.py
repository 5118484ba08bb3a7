"""Partner offboarding: `lethe project offboard` ends the partnership and revokes the keys
(AccountService.offboard_project: SQL only, so it works while the worker owns ClickHouse);
job `offboarding` then deletes all the project's data in both stores, except held data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord
from app.domain.holds import Hold, Scope
from app.domain.statuses import ProjectStatus
from app.ports import EventLifecycle, UnitOfWork, UnitOfWorkFactory
from app.services.dead_letters import DeadLetterService
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.keys import ANALYTICS, KeyService
from app.services.request_rows import apply_state, state_of
from app.services.summary import JobSummary


class OffboardingService:
    def __init__(self, uow: UnitOfWorkFactory, holds: HoldService, events: EventLifecycle, keys: KeyService,
                 dead_letters: DeadLetterService, identities: Identities) -> None:
        self._ids = identities
        self._keys = keys
        self._dead_letters = dead_letters
        self._uow = uow
        self._holds = holds
        self._events = events

    def run(self, now: datetime) -> JobSummary:
        summary = JobSummary("offboarding", now)
        with self._uow() as uow:
            projects = [(p.id, p.name) for p in uow.projects.with_status(ProjectStatus.OFFBOARDING)]
        for project_id, name in projects:
            with self._uow() as uow:
                holds = self._holds.standing(uow, [project_id])
                held = self._holds.in_events(uow, holds)
            if any(h.scope is Scope.PROJECT for h in holds):
                summary.held += 1  # the whole project is frozen: nothing is touched
                continue
            events = self._events.delete_project(name, held)
            metrics = self._events.delete_project_metrics(name)
            with self._uow() as uow:
                counts = {"clickhouse.events": events, "clickhouse.daily_metrics": metrics,
                          **self._sql(uow, project_id, name, holds, now)}
                remaining = len(holds)
                project = uow.projects.by_id(project_id)
                assert project is not None
                if not remaining:
                    project.status = ProjectStatus.ENDED.value
                uow.audit(AuditRecord("job:offboarding", "project.data_deleted", name, None,
                                      {"evidence": counts, "held_back": remaining}))
                uow.commit()
            summary.processed += 1
            summary.held += int(bool(holds))
            summary.add(counts)
        return summary

    @staticmethod
    def _complete_open_requests(uow: UnitOfWork, project: str, subject_ids: Sequence[str], now: datetime) -> int:
        """Open requests of users whose data this run deletes are done: `completed` (a grace one
        could no longer be restored), each audited. A held user's request stays as it is."""
        rows = uow.requests.open_for_many(subject_ids)
        for row in rows.values():
            apply_state(row, lifecycle.after_offboarded(state_of(row)))
            row.anonymised_at = row.anonymised_at or now
            row.completed_at, row.lease_until, row.detail = now, None, None
            row.evidence = {**row.evidence, "offboarding": {"completed": 1}}
            uow.audit(AuditRecord("job:offboarding", "deletion_request.completed", project, row.audit_subject,
                                  {"request_id": row.id, "by": "offboarding"}))
        return len(rows)

    def _sql(self, uow: UnitOfWork, project_id: str, name: str, holds: Sequence[Hold],
             now: datetime) -> dict[str, int]:
        held_users = {self._ids.lookup(project_id, h.target) for h in holds if h.scope is Scope.USER}
        doomed, kept = self._holds.split_messages(uow, name, project_id, uow.messages.in_project(project_id),
                                                  holds)
        authors_of_kept = {m.subject_id for m in kept}  # a held message keeps its attribution too
        free_subjects = [sid for sid, user in uow.subjects.in_project(project_id)
                         if user not in held_users and sid not in authors_of_kept]
        counts = {
            "sql.messages": uow.messages.delete_ids([m.row_id for m in doomed]),
            "sql.complaints": uow.complaints.delete_in(project_id, keep_messages={m.message_id for m in kept}),
            "sql.profiles": uow.profiles.delete(free_subjects),
            "sql.logins": uow.logins.delete_of(free_subjects),
            "sql.dead_letters": self._dead_letters.expire(uow, project_id, holds=holds),
            "sql.event_receipts": uow.receipts.delete_in(project_id),
            "sql.idempotency_keys": uow.idempotency.delete_in(project_id),
            "sql.suppressions": uow.suppressions.delete_in(project_id),
        }
        # stamped with the service's clock: `--now` never changes stored timestamps (CONTRACT §2)
        counts["sql.deletion_requests"] = self._complete_open_requests(uow, name, free_subjects, uow.now())
        uow.requests.forget_reasons(free_subjects)
        # the keys to their events' personal values; the project's day keys once no hold remains
        counts["sql.data_keys"] = len(self._keys.destroy(uow, free_subjects))  # every purpose
        if not holds:
            counts["sql.data_keys"] += self._keys.destroy_day_keys(uow, ANALYTICS, project_id)
        counts["sql.subjects"] = uow.subjects.destroy_links(free_subjects, uow.now())
        return counts
