"""Deletion requests: create (idempotently), read, list, restore. The officers' side (their
queue, deadlines) is app.services.officer_requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from anyio import to_thread
from sqlalchemy.exc import IntegrityError

from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord, subject_hash
from app.domain.ids import new_id
from app.domain.policy import Handles
from app.domain.requests import Mode, Source, Status, Step, TransitionRefused
from app.domain.statuses import SubjectStatus
from app.models import DeletionRequest, Project, Subject
from app.ports import Clock, UnitOfWork, UnitOfWorkFactory
from app.ports.repositories import UserFilter
from app.retry import retry_lost_race, retry_transient
from app.services.batching import GroupCommitter
from app.services.callbacks import CallbackService
from app.services.errors import Conflict, NotFound
from app.services.idempotency import Idempotency
from app.services.identities import Identities
from app.services.keys import GRACE, KeyService
from app.services.policies import PolicyBook
from app.services.request_rows import apply_state, state_of, to_view
from app.services.suppressions import SuppressionService
from app.services.views import DeletionRequestOut, DeletionRequestPage, without_user


class NewRequest(NamedTuple):
    """What someone asked for: erase this user of this project, in this mode, for this reason."""

    project_id: str
    user_id: str
    mode: Mode
    reason: str | None
    source: Source
    actor: str
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the partner asked for: a new request (`created`), or the open one they already had."""

    created: bool
    body: DeletionRequestOut


class DeletionService:
    # the audit log's keyed hash of the user id, written with each request, kept as the log keeps it
    handles: Handles = frozenset({("sql.deletion_requests", "audit_subject", "kept_as_legal_record")})

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, policies: PolicyBook, secret_key: bytes,
                 erasure_due: Callable[[], None], keys: KeyService, identities: Identities,
                 suppressions: SuppressionService, callbacks: CallbackService | None = None) -> None:
        self._callbacks = callbacks
        self._suppressions = suppressions
        self._keys = keys
        self._ids = identities
        self._uow = uow
        self._clock = clock
        self._policies = policies
        self._key = secret_key
        self._idempotency = Idempotency(uow, clock, secret_key)
        self._erasure_due = erasure_due  # asks for an erasure run now (the scheduler's anonymise job)
        self._batcher: GroupCommitter[NewRequest, Outcome] = GroupCommitter(self._create_many,
                                                                            name="deletion-requests")

    # --- create -------------------------------------------------------------------------
    def request(self, project_id: str, user_id: str, mode: Mode, reason: str | None, *,
                source: Source = Source.PARTNER_API, actor: str, idempotency_key: str | None = None) -> Outcome:
        if idempotency_key is None:
            outcome = self._batcher.submit(NewRequest(project_id, user_id, mode, reason, source, actor))
        else:
            replay = self._idempotency.begin(project_id, idempotency_key, self._body_hash(user_id, mode, reason))
            if replay is not None:
                # The stored response leaves the user id out (only `subjects` may hold it);
                # the same body carries the same user id, so it is put back from there.
                created, body = replay
                return Outcome(created, msgspec.convert({**body, "user_id": user_id}, DeletionRequestOut))
            try:
                outcome = self._create(project_id, user_id, mode, reason, source, actor, idempotency_key)
            except BaseException:
                self._idempotency.abandon(project_id, idempotency_key)
                raise
        if outcome.created:
            self.kick_anonymise()
        return outcome

    async def request_async(self, project_id: str, user_id: str, mode: Mode, reason: str | None, *,
                            actor: str, idempotency_key: str | None = None) -> Outcome:
        """`request` for the event loop: without an Idempotency-Key the call waits for its
        group commit without holding a thread."""
        if idempotency_key is not None:
            return await to_thread.run_sync(lambda: self.request(
                project_id, user_id, mode, reason, actor=actor, idempotency_key=idempotency_key))
        future = self._batcher.enqueue(NewRequest(project_id, user_id, mode, reason, Source.PARTNER_API, actor))
        outcome = await asyncio.wrap_future(future)
        if outcome.created:
            self.kick_anonymise()
        return outcome

    def kick_anonymise(self) -> None:
        """A new request committed: anonymise now rather than at the next periodic run."""
        self._erasure_due()

    def _create_many(self, items: Sequence[NewRequest]) -> list[Outcome | BaseException]:
        """Many partners' requests in one transaction, with set-based reads and writes.

        If the batch cannot commit (another process opened a request for one of these users
        meanwhile), every item is retried on its own, so one conflict does not fail the rest.
        """
        try:
            return list(retry_transient(lambda: self._create_batch(items)))
        except IntegrityError:
            results: list[Outcome | BaseException] = []
            for item in items:
                try:
                    results.append(self._create(*item))
                except Exception as exc:
                    results.append(exc)
            return results

    def _create_batch(self, items: Sequence[NewRequest]) -> list[Outcome]:
        """Set-based, as `open_many`: one read of the subjects and of their open requests, then
        `_open_new` for the users without one. A user listed twice gets the first one's request."""
        now = self._clock()
        with self._uow() as uow:
            projects: dict[str, Project] = {}
            for project_id in {i.project_id for i in items}:
                project = uow.projects.by_id(project_id)
                assert project is not None
                projects[project_id] = project
            subjects: dict[tuple[str, str], Subject] = {}
            for project_id in projects:
                users = {i.user_id for i in items if i.project_id == project_id}
                found = self._ids.ensure(uow, project_id, users, now)
                subjects.update({(project_id, user): s for user, s in found.items()})
            subject_ids = [subjects[(i.project_id, i.user_id)].id for i in items]
            open_rows = uow.requests.open_for_many(subject_ids)
            taken: set[str] = set()
            openers: dict[int, str] = {}  # item position -> subject id, for the first item of each user
            for position, subject_id in enumerate(subject_ids):
                if subject_id not in open_rows and subject_id not in taken:
                    openers[position] = subject_id
                    taken.add(subject_id)
            rows = self._open_new(uow, projects, [(items[p], sid) for p, sid in openers.items()], now)
            made = {p: DeletionRequest(**row) for p, row in zip(openers, rows, strict=True)}
            open_rows.update({row.subject_id: row for row in made.values()})
            outcomes = [Outcome(p in made,
                                to_view(open_rows[subject_ids[p]], projects[item.project_id].name, item.user_id, now))
                        for p, item in enumerate(items)]
            uow.commit()
        return outcomes

    def _open_new(self, uow: UnitOfWork, projects: Mapping[str, Project],
                  new: Sequence[tuple[NewRequest, str]], now: datetime) -> list[dict[str, Any]]:
        """New pending requests for (item, subject id) pairs whose subjects have none, in the
        caller's transaction, set-based: one key lookup for the sealed reasons, one insert, one
        end of suppression per project and actor. Returns each request's values, in order."""
        with_reason = sorted({subject_id for item, subject_id in new if item.reason})
        grace = self._keys.ciphers(uow, with_reason, GRACE, create=True) if with_reason else {}
        rows: list[dict[str, Any]] = []
        unsuppressed: dict[tuple[str, str], list[str]] = {}  # (project id, actor) -> users
        for item, subject_id in new:
            project = projects[item.project_id]
            grace_until, due_by = lifecycle.deadlines(now, item.mode,
                                                      self._policies.for_project(project.name).grace_days, now)
            sealed = grace[subject_id].encrypt(item.reason, b"reason") if item.reason else None
            rows.append(self._created(uow, project, subject_id, item, sealed, (now, grace_until, due_by)))
            unsuppressed.setdefault((project.id, item.actor), []).append(item.user_id)
        uow.requests.insert_many(rows)
        for (project_id, actor), users in unsuppressed.items():
            self._suppressions.end_for(uow, projects[project_id], users, actor)
        return rows

    def _create(self, project_id: str, user_id: str, mode: Mode, reason: str | None, source: Source,
                actor: str, idempotency_key: str | None) -> Outcome:
        # A concurrent request for the same user may win the race for the subject row or the
        # one open request (both unique in the database): then we answer with theirs.
        return retry_lost_race(
            lambda: self._create_once(project_id, user_id, mode, reason, source, actor, idempotency_key),
            Conflict("concurrent requests for this user; retry"))

    def _create_once(self, project_id: str, user_id: str, mode: Mode, reason: str | None, source: Source,
                     actor: str, idempotency_key: str | None) -> Outcome:
        now = self._clock()
        with self._uow() as uow:
            project = uow.projects.by_id(project_id)
            assert project is not None
            subject = self._ids.ensure(uow, project_id, [user_id], now)[user_id]
            row, created = self.open_in(uow, project, subject,
                                        NewRequest(project_id, user_id, mode, reason, source, actor))
            outcome = Outcome(created, to_view(row, project.name, user_id, now))
            self._idempotency.settle(uow, project_id, idempotency_key, created=created,
                                     response=without_user(outcome.body))
            uow.commit()
        return outcome

    def open_in(self, uow: UnitOfWork, project: Project, subject: Subject, asked: NewRequest, *,
                known_no_open: bool = False, asked_at: datetime | None = None) -> tuple[DeletionRequest, bool]:
        """Within the caller's transaction: the subject's open request, or a new one (True).
        `known_no_open`: the caller already knows the subject has no open request.
        `asked_at`: when the user asked, if before now (a confirmation event's own time)."""
        existing = None if known_no_open else uow.requests.open_for(subject.id)
        if existing is not None:
            return existing, False
        now = self._clock()
        requested_at = asked_at or now
        grace_until, due_by = lifecycle.deadlines(requested_at, asked.mode,
                                                  self._policies.for_project(project.name).grace_days, now)
        row = DeletionRequest(**self._created(uow, project, subject.id, asked,
                                              self._sealed_reason(uow, subject, asked.reason),
                                              (requested_at, grace_until, due_by)))
        uow.requests.add(row)
        self._suppressions.end_for(uow, project, [asked.user_id], asked.actor)
        return row, True

    def open_many(self, uow: UnitOfWork, project: Project, user_ids: Sequence[str], mode: Mode,
                  reason: str | None, actor: str) -> dict[str, tuple[str, bool]]:
        """`open_in` for many users of one project at once (a partner's batch), set-based:
        one read of their subjects and of their open requests, one key lookup, one insert.
        user id -> (the id of their open request, True if it is new)."""
        now = self._clock()
        subjects = self._ids.ensure(uow, project.id, user_ids, now)
        open_rows = uow.requests.open_for_many([s.id for s in subjects.values()])
        new = [u for u in dict.fromkeys(user_ids) if subjects[u].id not in open_rows]
        found = {u: (open_rows[s.id].id, False) for u, s in subjects.items() if s.id in open_rows}
        asked = [NewRequest(project.id, user, mode, reason, Source.PARTNER_API, actor) for user in new]
        rows = self._open_new(uow, {project.id: project}, [(a, subjects[a.user_id].id) for a in asked], now)
        found.update({user: (row["id"], True) for user, row in zip(new, rows, strict=True)})
        return found

    def _created(self, uow: UnitOfWork, project: Project, subject_id: str, asked: NewRequest,
                 sealed_reason: str | None, times: tuple[datetime, datetime, datetime]) -> dict[str, Any]:
        """A new pending request's column values (requested_at, grace_until, due_by in `times`),
        its audit entry written in the caller's transaction: one request or a batch's."""
        requested_at, grace_until, due_by = times
        request_id = new_id()
        audit_subject = subject_hash(self._key, project.name, asked.user_id)
        uow.audit(AuditRecord(asked.actor, "deletion_request.created", project.name, audit_subject,
                              {"request_id": request_id, "mode": asked.mode.value, "source": asked.source.value}))
        return {"id": request_id, "project_id": project.id, "subject_id": subject_id,
                "audit_subject": audit_subject, "mode": asked.mode.value,
                "source": asked.source.value, "status": Status.PENDING.value, "next_step": Step.ANONYMISE.value,
                "reason": sealed_reason, "requested_at": requested_at, "grace_until": grace_until,
                "due_by": due_by, "attempts": 0, "evidence": {}, "due_extended_months": 0}

    def keep_audit_subjects(self, batch: int = 1_000) -> int:
        """Open requests made before `audit_subject` existed get it, from their subject's user
        id while that is still linked (run by `lethe migrate` after the schema, as
        Identities.seal_legacy does): once purged, the partner still finds them by user id. A
        batch per transaction, each audited; safe to run again. Returns how many were set."""
        total, after = 0, ""
        while True:
            with self._uow() as uow:
                rows = uow.requests.open_without_audit_subject(after, batch)
                if not rows:
                    return total
                users = self._ids.user_ids_of(uow, [subject_id for _id, _project, subject_id in rows])
                names = uow.projects.names({project_id for _id, project_id, _subject in rows})
                subjects = {request_id: subject_hash(self._key, names[project_id], users[subject_id])
                            for request_id, project_id, subject_id in rows if subject_id in users}
                uow.requests.set_audit_subjects(subjects)
                if subjects:
                    uow.audit(AuditRecord("operator:migrate", "deletion_requests.audit_subjects_kept", None, None,
                                          {"requests": len(subjects)}))
                uow.commit()
            total, after = total + len(subjects), rows[-1][0]

    def _sealed_reason(self, uow: UnitOfWork, subject: Subject, reason: str | None) -> str | None:
        """The partner's free text may name the person: kept sealed under the subject's grace key."""
        if not reason:
            return None
        return self._keys.cipher(uow, subject.id, GRACE).encrypt(reason, b"reason")

    def restore_in(self, uow: UnitOfWork, project: Project, row: DeletionRequest, actor: str,
                   event_at: datetime | None = None) -> str:
        """Within the caller's transaction, `row` locked (see DeletionRequests.lock): the one
        guarded write of a restore. The state machine decides on the row as it is now, after
        any job that moved it on has committed; the subject is unhidden in the same
        transaction. Returns the user id; raises Conflict saying why when it is refused.

        The restore is recorded as the user's latest restore: at `event_at` (the platform's
        time of an `account_restored`) or, for a partner's restore, now. A confirmation the
        user made before it that arrives late then cannot open a new request: of the two, the
        later wins (domain.requests.confirmation_stands)."""
        now = self._clock()
        subject = uow.subjects.lock(row.subject_id)  # as it is now, not as the caller loaded it
        user_id = self._ids.user_id(uow, subject)
        if subject is None or subject.user_key is None or user_id is None:
            raise Conflict("the user's data was already purged; nothing can be restored")
        try:
            state = lifecycle.restore(state_of(row), now)
        except TransitionRefused as exc:
            raise Conflict(str(exc)) from exc
        apply_state(row, state)
        row.restored_at, row.lease_until = now, None
        # a restored request is closed: no hold stops it any more (`holds` lists what stops one)
        row.evidence = {k: v for k, v in row.evidence.items() if k != "_holds"}
        subject.status = SubjectStatus.ACTIVE.value
        subject.restored_event_at = lifecycle.latest(subject.restored_event_at, event_at or now)
        uow.audit(AuditRecord(actor, "deletion_request.restored", project.name,
                              subject_hash(self._key, project.name, user_id), {"request_id": row.id}))
        if self._callbacks is not None:
            self._callbacks.record(uow, [row], lambda _ids: {row.subject_id: user_id},
                                   lambda r, name: to_view(r, name, None, now))
        return user_id

    def _body_hash(self, user_id: str, mode: Mode, reason: str | None) -> str:
        return self._idempotency.body_hash(user_id, mode.value, reason)

    # --- read ---------------------------------------------------------------------------
    def get(self, project_id: str, request_id: str) -> DeletionRequestOut:
        with self._uow() as uow:
            row = self._load(uow, project_id, request_id)
            return self._render(uow, row)

    def page(self, project_id: str, *, user_id: str | None, status: str | None, limit: int,
             cursor: str | None) -> DeletionRequestPage:
        """The project's requests, newest first; `user_id` finds a user's requests also after their
        purge destroyed the link (through the audit subject each request keeps); such a request
        shows `user_id` null, as when read by its id."""
        with self._uow() as uow:
            user = None
            if user_id is not None:
                project = uow.projects.by_id(project_id)
                assert project is not None
                subject = self._ids.find(uow, project_id, user_id)
                user = UserFilter(subject.id if subject is not None else None,
                                  subject_hash(self._key, project.name, user_id))
            rows, next_cursor = uow.requests.page(project_id, user=user, status=status, limit=limit, cursor=cursor)
            return DeletionRequestPage([self._render(uow, row) for row in rows], next_cursor)

    # --- restore ------------------------------------------------------------------------
    def restore(self, project_id: str, request_id: str | None, *, actor: str,
                user_id: str | None = None) -> DeletionRequestOut:
        """Restore by request id (partner API) or the user's open request. A restore that loses
        a race with a job sees the job's outcome and is refused with its reason (409)."""
        return retry_transient(lambda: self._restore(project_id, request_id, actor, user_id))

    def _restore(self, project_id: str, request_id: str | None, actor: str, user_id: str | None) -> DeletionRequestOut:
        with self._uow() as uow:
            if request_id is not None:
                row = self._load(uow, project_id, request_id, lock=True)
            else:
                subject = self._ids.find(uow, project_id, user_id or "")
                found = uow.requests.open_for(subject.id, lock=True) if subject else None
                if found is None:
                    raise NotFound("the user has no open deletion request")
                row = found
            project = uow.projects.by_id(project_id)
            assert project is not None
            user = self.restore_in(uow, project, row, actor)
            uow.commit()
            return to_view(row, project.name, user, uow.now())

    def _load(self, uow: UnitOfWork, project_id: str, request_id: str, *, lock: bool = False) -> DeletionRequest:
        row = uow.requests.get(project_id, request_id, lock=lock)
        if row is None:
            raise NotFound(f"deletion request {request_id} not found")
        return row

    def _render(self, uow: UnitOfWork, row: DeletionRequest) -> DeletionRequestOut:
        subject = uow.subjects.get(row.subject_id)
        project = uow.projects.by_id(row.project_id)
        assert subject is not None and project is not None
        return to_view(row, project.name, self._ids.user_id(uow, subject), uow.now())
