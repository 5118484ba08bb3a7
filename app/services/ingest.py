"""The events webhook: validate, dead-letter what cannot be stored, pseudonymise at the door,
apply the operational effects in SQL and put the analytics events in the ingest outbox.

Concurrent webhook calls share one SQL transaction (group commit). The operational effects and
the outbox entry (app.services.outbox) commit together, so a 2xx means durably stored without
waiting for ClickHouse: the process that owns ClickHouse moves the entry there moments later.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from anyio import to_thread
from sqlalchemy import exc as sql_errors

from app import observability
from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord, subject_hash
from app.domain.crypto import Cipher
from app.domain.events import (
    Actor,
    EnvelopeError,
    Event,
    parse_envelope,
    report_type,
    split_body,
    supersedes,
    time_problem,
)
from app.domain.requests import Mode, Source
from app.domain.statuses import SubjectStatus
from app.domain.webhooks import delivery_receipt
from app.ports import Clock, EventRow, UnitOfWork, UnitOfWorkFactory
from app.retry import retry_transient
from app.services.batching import GroupCommitter
from app.services.dead_letters import DeadLetterService
from app.services.deletion import DeletionService, NewRequest
from app.services.errors import Conflict, Unavailable
from app.services.identities import Identities
from app.services.keys import ANALYTICS, CONTENT, GRACE, MESSAGE_TEXT_AAD, KeyService, day_key_owner, unsealed
from app.services.outbox import OutboxService
from app.services.policies import PolicyBook
from app.services.suppressions import SuppressionService
from app.stores.sql.models import Profile, Project, Subject

log = structlog.get_logger(__name__)

MESSAGE_SENT = {"message_sent", "admin_message_sent"}
MESSAGE_TEXT = MESSAGE_SENT | {"message_changed"}  # the events whose text goes to `messages`
MESSAGE_DELETED = {"message_deleted", "admin_message_deleted"}
PROFILE_NAME = {"name_set", "name_changed"}
PROFILE_AVATAR = {"avatar_set", "avatar_changed"}
# failures caused by a value (a store refuses it), as opposed to a store that is down
BAD_VALUE = (sql_errors.DataError, sql_errors.IntegrityError, ValueError, TypeError, OverflowError)
UNAVAILABLE = ("events cannot be stored right now (a store is unavailable); send them again: any stored meanwhile "
               "are counted as duplicates, never stored twice")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    suppressed: int = 0  # events of users erased moments ago: dropped, never stored

    @property
    def nothing_accepted(self) -> bool:
        """Every envelope was rejected (and kept as a dead letter): the call as a whole failed."""
        return bool(self.rejected) and not self.accepted

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "suppressed": self.suppressed}


@dataclass
class _Batch:
    """One webhook call on its way through the group commit."""

    project_id: str
    received: datetime
    events: list[Event] = field(default_factory=list)
    project: str = ""  # its name, for the metrics
    indices: list[int] = field(default_factory=list)  # each event's place in the body
    dead: list[tuple[int | None, str, str]] = field(default_factory=list)  # (index, reason, raw body)
    result: IngestResult = field(default_factory=IngestResult)
    opened: bool = False
    delivery_id: str | None = None  # a signed delivery's webhook-id: a repeated one is a duplicate


class IngestService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, policies: PolicyBook, outbox: OutboxService,
                 deletions: DeletionService, keys: KeyService, dead_letters: DeadLetterService,
                 secret_key: bytes, suppressions: SuppressionService, identities: Identities,
                 events_waiting: Callable[[], None]) -> None:
        self._identities = identities
        self._suppressions = suppressions
        self._keys = keys
        self._secret = secret_key
        self._dead_letters = dead_letters
        self._uow = uow
        self._clock = clock
        self._policies = policies
        self._outbox = outbox
        self._events_waiting = events_waiting  # asks for the outbox to be drained into ClickHouse now
        self._deletions = deletions
        self._batcher: GroupCommitter[_Batch, _Batch] = GroupCommitter(self._write_many, max_batch=64,
                                                                      name="events")

    def ingest(self, project_id: str, project: str, body: bytes) -> IngestResult:
        """Validate here (the caller's thread), then wait for the group commit that stores it."""
        self._outbox.check_room()
        return self._finish(self._batcher.submit(self.prepare(project_id, project, body)))

    async def ingest_async(self, project_id: str, project: str, body: bytes,
                           delivery_id: str | None = None) -> IngestResult:
        """`ingest` for the event loop: parsing runs on a worker thread (a body may hold 1,000
        events), the wait for the commit holds no thread."""
        self._outbox.check_room()
        batch = await to_thread.run_sync(self.prepare, project_id, project, body)
        batch.delivery_id = delivery_id
        return self._finish(await asyncio.wrap_future(self._batcher.enqueue(batch)))

    def prepare(self, project_id: str, project: str, body: bytes) -> _Batch:
        """Parse and validate a body (no I/O): what to store, what to dead-letter and why."""
        batch = _Batch(project_id, self._clock(), project=project)
        try:
            envelopes = split_body(json.loads(body))
        except (ValueError, EnvelopeError, RecursionError) as exc:
            detail = {EnvelopeError: str(exc), RecursionError: "the body nests too deeply to be read"}.get(
                type(exc), "the body is not valid JSON (UTF-8)")
            batch.result.rejected.append({"index": 0, "detail": detail})
            batch.dead.append((None, detail, body.decode("utf-8", errors="replace")))
            return batch
        cap = self._policies.for_project(project).retention_months
        for index, envelope in enumerate(envelopes):
            try:
                event = parse_envelope(envelope, project, batch.received)
                if problem := time_problem(event.at, batch.received, cap):
                    raise EnvelopeError(problem)
                batch.events.append(event)
                batch.indices.append(index)
            except EnvelopeError as exc:
                batch.result.rejected.append({"index": index, "detail": str(exc)})
                batch.dead.append((index, str(exc), _dump(envelope)))
        batch.result.accepted = len(batch.events)
        return batch

    def _finish(self, batch: _Batch) -> IngestResult:
        result = batch.result
        for outcome, count in (("accepted", result.accepted - result.duplicates), ("duplicate", result.duplicates),
                               ("rejected", len(result.rejected))):
            if count:
                observability.EVENTS.labels(batch.project, outcome).inc(count)
        if result.accepted > result.duplicates + result.suppressed:
            self._events_waiting()
        if batch.opened:
            self._deletions.kick_anonymise()
        if batch.result.rejected:
            log.info("events.rejected", count=len(batch.result.rejected), accepted=batch.result.accepted)
        return batch.result

    def _write_many(self, batches: Sequence[_Batch]) -> list[_Batch | BaseException]:
        """Many webhook calls in one SQL transaction. If that fails,
        each call is retried on its own, so one bad call does not fail the others."""
        try:
            retry_transient(lambda: self._write(batches))
            return list(batches)
        except Exception as exc:
            if len(batches) == 1:
                return [self._rescue(batches[0], exc)]
        results: list[_Batch | BaseException] = []
        for batch in batches:
            try:
                retry_transient(lambda: self._write([batch]))  # noqa: B023 - called at once
                results.append(batch)
            except Exception as exc:
                results.append(self._rescue(batch, exc))
        return results

    def _rescue(self, batch: _Batch, failure: Exception) -> _Batch | BaseException:
        """A call that could not be written. When a store refused a value (validation let
        something through that a store cannot hold), each envelope is written on its own and
        those that still fail are dead-lettered and reported by index: one bad envelope never
        costs the others. Any other failure (a store is down) answers 503: the platform sends
        the call again, and whatever was stored meanwhile is a duplicate then."""
        if not isinstance(failure, BAD_VALUE):
            log.warning("events.store_unavailable", error=type(failure).__name__)
            return Unavailable(UNAVAILABLE)
        dead = list(batch.dead)
        for index, event in zip(batch.indices, batch.events, strict=True):
            single = _Batch(batch.project_id, batch.received, events=[event], indices=[index])
            try:
                retry_transient(lambda: self._write([single]))  # noqa: B023 - called at once
            except Exception as exc:
                if not isinstance(exc, BAD_VALUE):
                    return Unavailable(UNAVAILABLE)
                log.warning("events.unstorable", index=index, error=type(exc).__name__)
                detail = "the envelope holds a value that cannot be stored"
                batch.result.accepted -= 1
                batch.result.rejected.append({"index": index, "detail": detail})
                dead.append((index, detail, _dump({"event": event.event, "value": event.raw_value})))
                continue
            batch.result.duplicates += single.result.duplicates
            batch.result.suppressed += single.result.suppressed
            batch.opened |= single.opened
        batch.result.rejected.sort(key=lambda r: int(r["index"]))
        try:
            retry_transient(lambda: self._write([_Batch(batch.project_id, batch.received, dead=dead,
                                                        delivery_id=batch.delivery_id)]))
        except Exception as exc:
            log.warning("events.dead_letter_failed", error=type(exc).__name__)
            return Unavailable(UNAVAILABLE)
        return batch

    def _write(self, batches: Sequence[_Batch]) -> None:
        """The group's calls in one transaction, set-based per project: one receipts claim and
        one suppression check for all of their events, then the new events stored together in
        arrival order (one subjects lookup, one key lookup per purpose, one outbox entry). Each
        call still hears its own duplicates and suppressed events."""
        calls: dict[str, tuple[Project, list[_Batch]]] = {}
        with self._uow() as uow:
            for batch in batches:
                project = uow.projects.by_id(batch.project_id)
                assert project is not None
                if batch.delivery_id is not None and not uow.receipts.claim(
                        project.id, [delivery_receipt(batch.delivery_id)], batch.received):
                    batch.result.duplicates, batch.opened = len(batch.events), False  # seen: no second effect
                    continue
                for index, reason, body in batch.dead:
                    self._dead_letters.add(uow, project.id, batch.received, reason, body, index)
                calls.setdefault(project.id, (project, []))[1].append(batch)
            for project, members in calls.values():
                rows: list[EventRow] = []
                opened = self._store(uow, project, self._new_events(uow, project, members), rows)
                for batch in members:
                    batch.opened = opened  # kicks the anonymise job: harmless for the others
                self._outbox.put(uow, project.id, rows)
            uow.commit()

    def _new_events(self, uow: UnitOfWork, project: Project,
                    calls: Sequence[_Batch]) -> list[tuple[Event, datetime]]:
        """The events of these calls seen for the first time (the first of each, in arrival
        order) and not suppressed, each with its call's receipt time; counts go to each call."""
        fresh = uow.receipts.claim(project.id, [e.dedup_key for b in calls for e in b.events],
                                   max(b.received for b in calls))
        taken: set[str] = set()
        firsts: list[tuple[_Batch, list[Event]]] = []
        for batch in calls:
            new = []
            for event in batch.events:
                if event.dedup_key in fresh and event.dedup_key not in taken:
                    taken.add(event.dedup_key)
                    new.append(event)
            batch.result.duplicates = len(batch.events) - len(new)
            firsts.append((batch, new))
        kept, _ = self._suppressions.split(uow, project, [e for _, new in firsts for e in new])
        stored = {id(e) for e in kept}
        events: list[tuple[Event, datetime]] = []
        for batch, new in firsts:
            batch.result.suppressed = sum(1 for e in new if id(e) not in stored)
            events.extend((e, batch.received) for e in new if id(e) in stored)
        return events

    def _store(self, uow: UnitOfWork, project: Project, received_events: Sequence[tuple[Event, datetime]],
               rows: list[EventRow]) -> bool:
        """Subjects, operational effects and the ClickHouse rows (appended to `rows`) of new
        events, each with the time its call was received."""
        if not received_events:
            return False
        events = [event for event, _ in received_events]
        received = max(at for _, at in received_events)
        keys = {e.actor.key for e in events if e.actor} | {Actor("user", u).key for e in events
                                                             for refs in e.user_refs.values() for u in refs}
        # A new user's activity time is their earliest event's, not the time we received it.
        earliest: dict[str, datetime] = {}
        for event in events:
            if event.actor and event.at < earliest.get(event.actor.key, received):
                earliest[event.actor.key] = event.at
        subjects = self._identities.ensure(uow, project.id, keys, received, earliest)
        ciphers = self._keys.ciphers(uow, sorted({_key_owner(project, e, subjects) for e in events
                                                  if any(e.personal.values())} - {""}), ANALYTICS, create=True)
        store_ip = self._policies.for_project(project.name).store_ip
        last_seen: dict[str, datetime] = {}
        opened = False
        authors = sorted({subjects[e.actor.key].id for e in events
                          if e.actor and e.personal.get("text") and e.event in MESSAGE_TEXT})
        messages = _Messages(self._keys.ciphers(uow, authors, CONTENT, create=True) if authors else {})
        for event, at in received_events:
            subject = subjects[event.actor.key] if event.actor else None
            if subject is not None:
                last_seen[subject.id] = max(event.at, last_seen.get(subject.id, event.at))
            opened |= self._effects(uow, project, event, subject, messages, at)
            rows.append(self._row(project, event, subject, subjects, at,
                                  ciphers.get(_key_owner(project, event, subjects)), store_ip))
        messages.flush(uow)
        uow.subjects.seen(last_seen)
        return opened

    def _row(self, project: Project, event: Event, subject: Subject | None, subjects: dict[str, Subject],
             received: datetime, cipher: Cipher | None, store_ip: bool) -> EventRow:
        hidden = subject is not None and subject.status != SubjectStatus.ACTIVE
        others = {k: _subject_ids(refs, subjects, event.raw_value.get(k)) for k, refs in event.user_refs.items()}
        return EventRow(
            project=project.name, event=event.event, at=event.at, received_at=received,
            subject_id=subject.id if subject else None, actor_kind=event.actor.kind if event.actor else "",
            dedup_key=event.dedup_key, room_id=event.room_id, message_id=event.message_id,
            platform=event.platform,
            # a subject being erased gets no new personal values: they are dropped at the door
            personal={} if hidden else _sealed(event.personal, cipher, store_ip), properties=others,
        )

    def _effects(self, uow: UnitOfWork, project: Project, event: Event, subject: Subject | None,
                 messages: _Messages, received: datetime) -> bool:
        """Operational data in SQL (CONTRACT "Lifecycle effects"); True when a request was opened.
        Effects resolve by event time, not by delivery order (see each branch)."""
        name, value, at = event.event, event.raw_value, event.at
        if name in MESSAGE_DELETED or name in ("message_moderation", "report_sent"):
            messages.flush(uow)
        if name == "message_moderation" and event.message_id:
            action = value.get("action")
            if action in ("hide", "delete"):
                uow.messages.mark_deleted(project.id, event.message_id, at)
            elif action == "restore":
                uow.messages.undelete(project.id, event.message_id)
            return False
        if subject is None:
            return False
        if name in MESSAGE_SENT and event.message_id:
            messages.new.append({"project_id": project.id, "message_id": event.message_id,
                                 "room_id": event.room_id or None, "subject_id": subject.id,
                                 "text": messages.sealed(subject.id, event.personal.get("text")), "sent_at": at})
        elif name in MESSAGE_DELETED and event.message_id:
            uow.messages.mark_deleted(project.id, event.message_id, at)
        elif name == "message_changed" and event.message_id and event.personal.get("text"):
            self._edited(uow, project, subject, event, messages)
        elif name == "report_sent" and event.message_id:
            uow.complaints.open(project.id, event.message_id, subject.id, report_type(value), at)
        elif name in PROFILE_NAME or name in PROFILE_AVATAR:
            self._profile(uow, subject, event)
        elif name == "user_login" and event.personal.get("ip"):
            if self._policies.for_project(project.name).store_ip:
                uow.logins.add(subject.id, self._grace(uow, subject).encrypt(event.personal["ip"], b"ip"), at)
        elif name == "delete_profile_confirmed" and event.actor and event.actor.kind == "user":
            return self._confirmed(uow, project, subject, event.actor.user_id, at, received)
        elif name == "account_restored" and event.actor and event.actor.kind == "user":
            return self._restored(uow, project, subject, event.actor.user_id, at, received)
        return False

    def _confirmed(self, uow: UnitOfWork, project: Project, subject: Subject, user_id: str, at: datetime,
                   received: datetime) -> bool:
        """A grace request from the user's confirmation, dated by the event, unless the user's
        `account_restored` is later by event time (it arrived first)."""
        subject.confirmed_event_at = lifecycle.latest(subject.confirmed_event_at, at)
        if not lifecycle.confirmation_stands(at, subject.restored_event_at):
            log.info("events.confirmation_superseded")
            return False
        _, created = self._deletions.open_in(uow, project, subject, _confirmed(project, user_id),
                                             asked_at=lifecycle.asked_at(at, received))
        return created

    def _restored(self, uow: UnitOfWork, project: Project, subject: Subject, user_id: str, at: datetime,
                  received: datetime) -> bool:
        """Restores the open request if the restore is not older than it. If the user confirmed
        again after this restore (that confirmation arrived first), the deletion starts again
        from that confirmation, as if the events had come in order. Returns True when a request
        was opened."""
        subject.restored_event_at = lifecycle.latest(subject.restored_event_at, at)
        row = uow.requests.open_for(subject.id, lock=True)
        if row is None or not lifecycle.restore_applies(at, row.requested_at):
            return False
        try:
            self._deletions.restore_in(uow, project, row, "user:webhook", event_at=at)
        except Conflict as exc:
            log.info("events.restore_refused", detail=str(exc))
            return False
        confirmed = subject.confirmed_event_at
        if confirmed is None or not lifecycle.confirmation_stands(confirmed, at):
            return False
        uow.flush()  # the restored request is closed before the next one opens
        _, created = self._deletions.open_in(uow, project, subject, _confirmed(project, user_id),
                                             asked_at=lifecycle.asked_at(confirmed, received), known_no_open=True)
        return created

    def _edited(self, uow: UnitOfWork, project: Project, subject: Subject, event: Event,
                messages: _Messages) -> None:
        """The author edited a message: the stored text becomes the new one (latest edit by
        event time wins). Audited without the text. A hidden author's edits change nothing."""
        if subject.status != SubjectStatus.ACTIVE or event.actor is None:
            return
        text = messages.sealed(subject.id, event.personal["text"]) or ""
        if uow.messages.edit(project.id, event.message_id, subject.id, text, event.at):
            uow.audit(AuditRecord("user:webhook", "message.edited", project.name,
                                  subject_hash(self._secret, project.name, event.actor.user_id),
                                  {"message_id": event.message_id}))

    def _grace(self, uow: UnitOfWork, subject: Subject) -> Cipher:
        """The subject's grace key: what a restore must find again (profile, IPs), destroyed at purge."""
        return self._keys.cipher(uow, subject.id, GRACE)

    def _profile(self, uow: UnitOfWork, subject: Subject, event: Event) -> None:
        """Last writer wins per field, by event time; values stored sealed under the grace key."""
        cipher = self._grace(uow, subject)
        profile = uow.profiles.get(subject.id) or Profile(subject_id=subject.id, updated_at=event.at)
        for attr, at_field, kinds, column in (("display_name", "display_name_at", PROFILE_NAME, "user_name"),
                                               ("avatar_url", "avatar_at", PROFILE_AVATAR, "url")):
            value = event.personal.get(column) or (event.personal.get("nickname") if attr == "display_name" else "")
            if event.event not in kinds or not value:
                continue
            current = unsealed(cipher, getattr(profile, attr), attr)
            if supersedes(event.at, value, getattr(profile, at_field), current):
                setattr(profile, attr, cipher.encrypt(value, attr.encode()))
                setattr(profile, at_field, event.at)
        profile.updated_at = max(t for t in (profile.display_name_at, profile.avatar_at, profile.updated_at) if t)
        uow.profiles.add(profile)


@dataclass
class _Messages:
    """One batch's messages: new ones are inserted together (anything that updates messages
    flushes them first), and every text is sealed under its author's content key."""

    content: Mapping[str, Cipher]  # author subject id -> cipher
    new: list[dict[str, Any]] = field(default_factory=list)

    def sealed(self, author: str, text: str | None) -> str | None:
        cipher = self.content.get(author)
        return cipher.encrypt(text, MESSAGE_TEXT_AAD) if text and cipher is not None else None

    def flush(self, uow: UnitOfWork) -> None:
        if self.new:
            uow.messages.add(self.new)
            self.new.clear()


def _subject_ids(refs: Sequence[str], subjects: dict[str, Subject], raw: Any) -> str | list[str]:
    """Other users an event names, as subject ids: one for one, a list for a list."""
    ids = [subjects[Actor("user", u).key].id for u in refs]
    return ids if isinstance(raw, list) or len(ids) != 1 else ids[0]


def _key_owner(project: Project, event: Event, subjects: dict[str, Subject]) -> str:
    """Whose analytics key seals an event's personal values: its actor's (destroyed when the
    actor is erased); an event with no actor uses its project's key of that day (destroyed by
    retention at the cap). "" for a hidden actor: nothing of theirs is stored any more."""
    if event.actor is None:
        return day_key_owner(ANALYTICS, project.id, event.at.date())
    subject = subjects[event.actor.key]
    return subject.id if subject.status == SubjectStatus.ACTIVE else ""


def _sealed(personal: Mapping[str, str], cipher: Cipher | None, store_ip: bool) -> dict[str, str]:
    """Personal values as ciphertext, each bound to its column; never plaintext: without a
    key (no personal value was expected) they are dropped. No IP unless the policy allows."""
    values = {c: v for c, v in personal.items() if v and (store_ip or c != "ip")}
    if not values or cipher is None:
        return {}
    return {column: cipher.encrypt(value, column.encode()) for column, value in values.items()}


def _confirmed(project: Project, user_id: str) -> NewRequest:
    """The request a user's own `delete_profile_confirmed` opens: grace mode, no reason."""
    return NewRequest(project.id, user_id, Mode.GRACE, None, Source.USER, "user:webhook")


def _dump(envelope: Any) -> str:
    """A rejected envelope as it came, for the dead-letter store. ASCII escapes keep even a
    lone surrogate (which UTF-8 cannot hold); the erasure search decodes them."""
    return json.dumps(envelope, ensure_ascii=True, default=str)
