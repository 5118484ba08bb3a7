"""Job `retention` (daily, 00:00 UTC): nothing personal older than the policy's cap survives
unless held. Raw events leave by whole daily partitions after their day is aggregated;
old messages, complaints and logins are deleted; users inactive for the whole cap are erased
(a request with source `retention`); dead letters and dedup records past their time go too."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import delete, select

from app.domain.audit import AuditRecord
from app.domain.holds import Data, Hold, Scope
from app.domain.policy import Handles
from app.domain.requests import Mode, Source, add_months
from app.ports import Clock, UnitOfWorkFactory
from app.services.dead_letters import DeadLetterService
from app.services.deletion import DeletionService
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.keys import ANALYTICS, KeyService
from app.services.policies import PolicyBook
from app.services.summary import JobSummary
from app.stores.clickhouse.lifecycle import EventLifecycle
from app.stores.sql.models import Complaint, EventReceipt, IdempotencyKey, Login, Message, Subject
from app.stores.sql.uow import SqlUnitOfWork

IDEMPOTENCY_KEYS_KEPT = timedelta(days=1)


class RetentionService:
    handles: Handles = frozenset({
        ("clickhouse.events", "dedup_key", "retention"), ("sql.event_receipts", "dedup_key", "retention"),
        ("sql.idempotency_keys", "body_hash", "retention"), ("sql.suppressions", "key_hash", "retention"),
    })

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, policies: PolicyBook, holds: HoldService,
                 events: EventLifecycle, deletions: DeletionService, keys: KeyService,
                 dead_letters: DeadLetterService, identities: Identities) -> None:
        self._ids = identities
        self._keys = keys
        self._dead_letters = dead_letters
        self._uow = uow
        self._clock = clock
        self._policies = policies
        self._holds = holds
        self._events = events
        self._deletions = deletions

    def run(self, now: datetime) -> JobSummary:
        summary = JobSummary("retention", now)
        # 1. aggregates first: a day is counted while its raw events are all still there
        for day in self._events.days_to_aggregate(now.date()):
            self._events.aggregate(day, self._clock())
            summary.stores["clickhouse.daily_metrics"] = summary.stores.get("clickhouse.daily_metrics", 0) + 1
        with self._uow() as uow:
            projects = uow.projects.names(uow.projects.all_ids())
            holds = self._holds.standing(uow, list(projects), now)
            held = self._holds.in_events(uow, holds)
            cutoffs = {pid: add_months(now, -self._policies.for_project(name).retention_months)
                       for pid, name in projects.items()}
        # 2. raw events: whole partitions up to the earliest cap; shorter per-project caps by rows
        held_days: set[date] = set()
        if cutoffs:
            earliest = min([*cutoffs.values(), add_months(now, -self._policies.default.retention_months)])
            expired = self._events.expire_before(earliest.date(), held)
            summary.stores["clickhouse.events"] = expired["rows"]
            summary.stores["clickhouse.partitions_dropped"] = expired["partitions_dropped"]
            for pid, cutoff in cutoffs.items():
                if cutoff.date() > earliest.date():
                    summary.stores["clickhouse.events"] += self._events.delete_project(
                        projects[pid], held, before=cutoff.replace(hour=0, minute=0, second=0, microsecond=0))
            summary.held += expired["held_rows"]
            held_days = set(expired["held_days"])
        # 3. SQL, one transaction per project
        for pid, name in sorted(projects.items(), key=lambda p: p[1]):
            with self._uow() as uow:
                counts = self._sql(uow, pid, name, cutoffs[pid], now, holds, summary)
                # actor-less events' day keys go with their days, except days where held rows stay
                counts["sql.data_keys"] = self._keys.destroy_day_keys(uow, ANALYTICS, pid, before=cutoffs[pid].date(),
                                                                      keep=held_days)
                if any(counts.values()):
                    uow.audit(AuditRecord("job:retention", "retention.applied", name, None, counts))
                uow.commit()
            for key, value in counts.items():
                summary.stores[key] = summary.stores.get(key, 0) + value
            summary.processed += sum(counts.values())
        # 4. suppressions whose time is up (keyed hashes only; audited as a count)
        with self._uow() as uow:
            expired_suppressions = uow.suppressions.expire(now)
            if expired_suppressions:
                uow.audit(AuditRecord("job:retention", "suppressions.expired", None, None,
                                      {"suppressions": expired_suppressions}))
            uow.commit()
        if expired_suppressions:
            summary.stores["sql.suppressions"] = expired_suppressions
        if summary.stores.get("sql.retention_requests"):
            self._deletions.kick_anonymise()
        return summary

    def _sql(self, uow: SqlUnitOfWork, project_id: str, name: str, cutoff: datetime, now: datetime,
             holds: Sequence[Hold], summary: JobSummary) -> dict[str, int]:
        session = uow.session
        project_holds = [h for h in holds if h.project == name]
        old_messages = list(session.execute(
            select(Message.id, Message.message_id, Message.room_id, Message.subject_id)
            .where(Message.project_id == project_id, Message.sent_at < cutoff)
        ))
        authors = self._ids.user_ids(uow, uow.subjects.by_ids(sorted({m.subject_id for m in old_messages
                                                                      if m.subject_id})))
        doomed, held_ids = [], set()
        for row_id, message_id, room_id, author in old_messages:
            data = Data.message(name, authors.get(author or ""), room_id, message_id)
            if self._holds.blocking(project_holds, data, now):
                held_ids.add(message_id)
            else:
                doomed.append(row_id)
        summary.held += len(held_ids)
        if doomed:
            session.execute(delete(Message).where(Message.id.in_(doomed)))
        complaints = session.execute(delete(Complaint).where(
            Complaint.project_id == project_id, Complaint.opened_at < cutoff, Complaint.message_id.not_in(held_ids)))
        held_users = {self._ids.lookup(project_id, h.target) for h in project_holds if h.scope is Scope.USER}
        project_held = any(h.scope is Scope.PROJECT for h in project_holds)
        logins = 0
        if not project_held:
            logins = session.execute(delete(Login).where(
                Login.at < cutoff, Login.subject_id.in_(select(Subject.id).where(
                    Subject.project_id == project_id, Subject.user_key.not_in(held_users))))).rowcount  # type: ignore[attr-defined]
        dead_letter_cutoff = now - timedelta(days=self._policies.for_project(name).dead_letter_retention_days)
        dead = self._dead_letters.expire(uow, project_id, dead_letter_cutoff)
        session.execute(delete(EventReceipt).where(EventReceipt.project_id == project_id,
                                                   EventReceipt.received_at < cutoff))
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.project_id == project_id,
                                                     IdempotencyKey.created_at < now - IDEMPOTENCY_KEYS_KEPT))
        opened = self._inactive_users(uow, project_id, cutoff)
        return {"sql.messages": len(doomed), "sql.complaints": int(complaints.rowcount),  # type: ignore[attr-defined]
                "sql.logins": int(logins), "sql.dead_letters": dead,
                "sql.retention_requests": opened}

    def _inactive_users(self, uow: SqlUnitOfWork, project_id: str, cutoff: datetime) -> int:
        """Users with no activity for the whole cap are erased like an immediate request."""
        project = uow.projects.by_id(project_id)
        assert project is not None
        idle = list(uow.session.scalars(select(Subject).where(
            Subject.project_id == project_id, Subject.status == "active", Subject.user_key.is_not(None),
            Subject.last_seen_at < cutoff, Subject.admin.is_(False))))
        users = self._ids.user_ids(uow, idle)
        opened = 0
        for subject in idle:
            if subject.id not in users:
                continue  # its id does not open: nothing to name it by (never expected)
            _, created = self._deletions.open_in(uow, project, subject, users[subject.id], Mode.IMMEDIATE, None,
                                                 Source.RETENTION, "job:retention")
            opened += int(created)
        return opened
