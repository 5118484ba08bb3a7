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
from app.domain.crypto import Cipher, derive_key
from app.domain.events import (
    DEDUP_LABEL,
    Actor,
    EnvelopeError,
    Event,
    parse_envelope,
    split_body,
    time_problem,
)
from app.domain.holds import Data
from app.domain.statuses import SubjectStatus
from app.domain.webhooks import delivery_receipt
from app.models import Project, Subject
from app.ports import Clock, EventRow, UnitOfWork, UnitOfWorkFactory
from app.retry import retry_transient
from app.services.batching import GroupCommitter
from app.services.dead_letters import DeadLetterService
from app.services.deletion import DeletionService
from app.services.errors import Unavailable
from app.services.event_effects import EventEffects
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.keys import ANALYTICS, HOLD, KeyService, day_key_owner
from app.services.outbox import OutboxService
from app.services.policies import PolicyBook
from app.services.suppressions import SuppressionService

log = structlog.get_logger(__name__)

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
        """The webhook's answer; when nothing was accepted, with the common error fields too."""
        answer = {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                  "suppressed": self.suppressed}
        if self.nothing_accepted:
            first = self.rejected[0]["detail"]
            more = f" (and {len(self.rejected) - 1} more, see `rejected`)" if len(self.rejected) > 1 else ""
            answer |= {"status_code": 400, "detail": f"nothing was accepted: {first}{more}", "extra": None}
        return answer


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
                 secret_key: bytes, suppressions: SuppressionService, identities: Identities, holds: HoldService,
                 events_waiting: Callable[[], None]) -> None:
        self._holds = holds
        self._dedup = derive_key(secret_key, DEDUP_LABEL)
        self._identities = identities
        self._suppressions = suppressions
        self._keys = keys
        self._dead_letters = dead_letters
        self._uow = uow
        self._clock = clock
        self._policies = policies
        self._outbox = outbox
        self._events_waiting = events_waiting  # asks for the outbox to be drained into ClickHouse now
        self._deletions = deletions
        self._effects = EventEffects(policies, keys, deletions, secret_key, holds)
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
        # a delivery is remembered (a repeat is a duplicate) only once it stores something: one
        # refused whole may be corrected and sent again under the same webhook-id
        batch.delivery_id = delivery_id if batch.events else None
        return self._finish(await asyncio.wrap_future(self._batcher.enqueue(batch)))

    def prepare(self, project_id: str, project: str, body: bytes) -> _Batch:
        """Parse and validate a body (no I/O): what to store, what to dead-letter and why."""
        batch = _Batch(project_id, self._clock(), project=project)
        try:
            envelopes = split_body(json.loads(body, parse_constant=_not_json))
        except (ValueError, EnvelopeError, RecursionError) as exc:
            detail = {EnvelopeError: str(exc), RecursionError: "the body nests too deeply to be read"}.get(
                type(exc), "the body is not valid JSON (UTF-8)")
            batch.result.rejected.append({"index": 0, "detail": detail})
            batch.dead.append((None, detail, body.decode("utf-8", errors="replace")))
            return batch
        cap = self._policies.for_project(project).retention_months
        for index, envelope in enumerate(envelopes):
            try:
                event = parse_envelope(envelope, project, batch.received, self._policies.properties, self._dedup)
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
        for outcome, count in (("accepted", result.accepted - result.duplicates - result.suppressed),
                               ("duplicate", result.duplicates), ("suppressed", result.suppressed),
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
            retry_transient(lambda: self._write([_Batch(
                batch.project_id, batch.received, dead=dead,
                delivery_id=batch.delivery_id if batch.result.accepted else None)]))  # as in ingest_async
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
        fresh_events = [e for _, new in firsts for e in new]
        kept, _ = self._suppressions.split(uow, project, fresh_events)
        stored = {id(e) for e in kept}
        # a suppressed event had no effect and is not stored: not remembered either, so that the
        # platform's retry is suppressed again, and taken once the suppression has ended
        uow.receipts.forget(project.id, [e.dedup_key for e in fresh_events if id(e) not in stored])
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
        held = self._held_ciphers(uow, project)
        store_ip = self._policies.for_project(project.name).store_ip
        last_seen: dict[str, datetime] = {}
        opened = False
        messages = self._effects.messages(uow, events, subjects)
        for event, at in received_events:
            subject = subjects[event.actor.key] if event.actor else None
            if subject is not None:
                last_seen[subject.id] = max(event.at, last_seen.get(subject.id, event.at))
            opened |= self._effects.apply(uow, project, event, subject, messages, at)
            kept = held(event)
            cipher = kept or ciphers.get(_key_owner(project, event, subjects))
            rows.append(self._row(project, event, subject, subjects, at, cipher, store_ip, kept=kept is not None))
        messages.flush(uow)
        uow.subjects.seen(last_seen)
        return opened

    def _held_ciphers(self, uow: UnitOfWork, project: Project) -> Callable[[Event], Cipher | None]:
        """The key of the room or message hold that covers an event, if any (else None). New
        data a hold covers goes under its key at the door: an erasure of the event's user that
        runs before the outbox reaches ClickHouse (and before the hold takes it there) destroys
        their analytics key, and the hold must still keep the event readable. A hold whose
        taking has not begun has no key yet: its first `take` seals what arrived until then."""
        holds = self._holds.keeping(uow, project.id, project.name)
        keys = self._keys.ciphers(uow, [h.id for h in holds], HOLD, create=False) if holds else {}
        if not keys:
            return lambda _event: None
        keyed = [h for h in holds if h.id in keys]

        def held(event: Event) -> Cipher | None:
            data = Data(project.name, rooms=frozenset({event.room_id} if event.room_id else ()),
                        messages=frozenset({event.message_id} if event.message_id else ()))
            hold = self._holds.keeper(keyed, data)
            return keys[hold.id] if hold is not None else None

        return held

    def _row(self, project: Project, event: Event, subject: Subject | None, subjects: dict[str, Subject],
             received: datetime, cipher: Cipher | None, store_ip: bool, *, kept: bool = False) -> EventRow:
        # a subject being erased gets no new personal values (dropped at the door), except what
        # a hold keeps: `cipher` is then the hold's key
        dropped = subject is not None and subject.status != SubjectStatus.ACTIVE and not kept
        others = {k: _subject_ids(refs, subjects, event.raw_value.get(k)) for k, refs in event.user_refs.items()}
        return EventRow(
            project=project.name, event=event.event, at=event.at, received_at=received,
            subject_id=subject.id if subject else None, actor_kind=event.actor.kind if event.actor else "",
            dedup_key=event.dedup_key, room_id=event.room_id, message_id=event.message_id,
            platform=event.platform,
            personal={} if dropped else _sealed(event.personal, cipher, store_ip), properties=others,
        )



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


def _not_json(constant: str) -> Any:
    """NaN, Infinity and -Infinity: Python reads them, JSON (RFC 8259) does not have them."""
    raise ValueError(f"{constant} is not JSON")


def _dump(envelope: Any) -> str:
    """A rejected envelope as it came, for the dead-letter store. ASCII escapes keep even a
    lone surrogate (which UTF-8 cannot hold); the erasure search decodes them."""
    return json.dumps(envelope, ensure_ascii=True, default=str)
