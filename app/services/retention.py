"""Job `retention` (daily, 00:00 UTC): nothing personal older than the policy's cap survives
unless held. Raw events leave by whole daily partitions after their day is aggregated;
old messages, complaints and logins are deleted; users inactive for the whole cap are erased
(a request with source `retention`); dead letters and dedup records past their time go too."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from app.domain.audit import AuditRecord
from app.domain.holds import Hold, Scope
from app.domain.policy import Handles
from app.domain.requests import Mode, Source
from app.domain.retention import Cutoffs, cutoffs, partition_cutoff, rows_before
from app.ports import Clock, EventLifecycle, UnitOfWork, UnitOfWorkFactory
from app.services.dead_letters import DeadLetterService
from app.services.deletion import DeletionService, NewRequest
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.keys import ANALYTICS, KeyService
from app.services.policies import PolicyBook
from app.services.summary import JobSummary


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
            summary.add({"clickhouse.daily_metrics": 1})
        with self._uow() as uow:
            projects = uow.projects.all_names()
            holds = self._holds.standing(uow, list(projects))
            held = self._holds.in_events(uow, holds)
            due = {pid: cutoffs(self._policies.for_project(name), now) for pid, name in projects.items()}
        # 2. raw events: whole partitions up to the earliest cap; shorter per-project caps by rows
        held_days: set[date] = set()
        if due:
            partitions_before = partition_cutoff((d.personal for d in due.values()), self._policies.default, now)
            expired = self._events.expire_before(partitions_before, held)
            summary.stores["clickhouse.events"] = expired["rows"]
            summary.stores["clickhouse.partitions_dropped"] = expired["partitions_dropped"]
            for pid, cutoff in due.items():
                if (before := rows_before(cutoff.personal, partitions_before)) is not None:
                    summary.stores["clickhouse.events"] += self._events.delete_project(projects[pid], held,
                                                                                       before=before)
            summary.held += expired["held_rows"]
            held_days = set(expired["held_days"])
        # 3. SQL, one transaction per project
        for pid, name in sorted(projects.items(), key=lambda p: p[1]):
            with self._uow() as uow:
                counts = self._sql(uow, pid, name, due[pid], now, holds, summary)
                # actor-less events' day keys go with their days, except days where held rows stay
                counts["sql.data_keys"] = self._keys.destroy_day_keys(
                    uow, ANALYTICS, pid, before=due[pid].personal.date(), keep=held_days)
                if any(counts.values()):
                    uow.audit(AuditRecord("job:retention", "retention.applied", name, None, counts))
                uow.commit()
            summary.add(counts)
            summary.processed += sum(counts.values())
        # 4. suppressions whose time is up (keyed hashes only; audited as a count). By the clock
        # the webhook checks them with, not the run's `now`: `jobs run all --now <next month>`
        # must not lift the suppressions its own purge just added
        with self._uow() as uow:
            expired_suppressions = uow.suppressions.expire(uow.now())
            if expired_suppressions:
                uow.audit(AuditRecord("job:retention", "suppressions.expired", None, None,
                                      {"suppressions": expired_suppressions}))
            uow.commit()
        if expired_suppressions:
            summary.stores["sql.suppressions"] = expired_suppressions
        if summary.stores.get("sql.retention_requests"):
            self._deletions.kick_anonymise()
        return summary

    def _sql(self, uow: UnitOfWork, project_id: str, name: str, due: Cutoffs, now: datetime,
             holds: Sequence[Hold], summary: JobSummary) -> dict[str, int]:
        project_holds = [h for h in holds if h.project == name]
        doomed, kept = self._holds.split_messages(uow, name, project_id,
                                                  uow.messages.in_project(project_id, sent_before=due.personal),
                                                  project_holds)
        summary.held += len(kept)
        messages = uow.messages.delete_ids([m.row_id for m in doomed])
        complaints = uow.complaints.delete_in(project_id, before=due.personal,
                                              keep_messages={m.message_id for m in kept})
        held_users = {self._ids.lookup(project_id, h.target) for h in project_holds if h.scope is Scope.USER}
        logins = 0
        if not any(h.scope is Scope.PROJECT for h in project_holds):
            logins = uow.logins.delete_older(project_id, due.personal, keep_user_keys=held_users)
        dead = self._dead_letters.expire(uow, project_id, due.dead_letters, project_holds)
        uow.receipts.delete_in(project_id, before=due.personal)
        uow.idempotency.delete_in(project_id, before=due.idempotency_keys)
        opened = self._inactive_users(uow, project_id, due.personal)
        return {"sql.messages": messages, "sql.complaints": complaints, "sql.logins": logins,
                "sql.dead_letters": dead, "sql.retention_requests": opened}

    def _inactive_users(self, uow: UnitOfWork, project_id: str, cutoff: datetime) -> int:
        """Users with no activity for the whole cap are erased like an immediate request."""
        project = uow.projects.by_id(project_id)
        assert project is not None
        idle = uow.subjects.idle(project_id, seen_before=cutoff)
        users = self._ids.user_ids(uow, idle)
        opened = 0
        for subject in idle:
            if subject.id not in users:
                continue  # its id does not open: nothing to name it by (never expected)
            _, created = self._deletions.open_in(uow, project, subject, NewRequest(
                project.id, users[subject.id], Mode.IMMEDIATE, None, Source.RETENTION, "job:retention"))
            opened += int(created)
        return opened
