"""The ingest outbox: webhook calls store their analytics events in SQL, in their own
transaction, and answer; the process that owns ClickHouse moves them there in blocks.

Exactly once: a drain first claims a block of entries in SQL (commits), then inserts the block
into ClickHouse under a deduplication token derived from the block id, then deletes the entries.
A drain that dies anywhere in between leaves its claim behind; the next drain redoes that block
first, with the same token, so ClickHouse drops a block it already has. Entries go in the order
they were written, so each subject's events reach ClickHouse in order.

ClickHouse being down, slow or full only delays analytics: the entries wait, the webhook goes on
answering. Past `max_events` waiting, webhook calls get 503 with Retry-After (`OutboxFull`), never
a silent drop. Erasure needs no step of its own here: the rows hold what ClickHouse will hold
(pseudonyms, and values sealed under keys an erasure destroys), and every job that reads or
erases events drains first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from app.domain.policy import Handles
from app.ports import Clock, EventRow, EventStore, UnitOfWork, UnitOfWorkFactory
from app.services.errors import Unavailable

log = structlog.get_logger(__name__)

BLOCK_EVENTS = 100_000  # events per ClickHouse insert (one part per day they span)
DEPTH_CACHE_SECONDS = 1.0  # with room to spare, the backpressure check reads the depth once a second


class OutboxFull(Unavailable):
    retry_after = 10


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    events: int
    oldest_age_seconds: float  # 0 when empty

    def as_dict(self) -> dict[str, float | int]:
        return {"events": self.events, "oldest_age_seconds": round(self.oldest_age_seconds, 3)}


class OutboxService:
    # the rows are ClickHouse's events before they get there; every erasure run drains first
    handles: Handles = frozenset({("sql.event_outbox", "rows", "drained_before_erasure")})

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, events: Callable[[], EventStore], max_events: int,
                 block_events: int = BLOCK_EVENTS) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events  # ClickHouse is opened (the embedded engine claimed) only when a drain runs
        self._max_events = max_events
        self._block_events = block_events
        self._drain_lock = threading.Lock()
        self._depth_checked = -DEPTH_CACHE_SECONDS
        self._depth = 0  # as last read, plus what this process has put since

    def put(self, uow: UnitOfWork, project_id: str, rows: Sequence[EventRow]) -> None:
        """In the webhook's transaction: the events are durable when it commits."""
        if rows:
            uow.outbox.add(project_id, uow.now(), rows)
            self._depth += len(rows)

    def check_room(self) -> None:
        """Backpressure: refuse new events (503, retry later) while the outbox is full."""
        now = time.monotonic()
        if self._depth >= self._max_events or now - self._depth_checked >= DEPTH_CACHE_SECONDS:
            self._depth = self.depth().events  # read again: a drain (here or elsewhere) may have made room
            self._depth_checked = now
        if self._depth >= self._max_events:
            raise OutboxFull(f"{self._depth} events are waiting for ClickHouse, at least the limit of "
                             f"{self._max_events} (LETHE_OUTBOX_MAX_EVENTS): nothing was stored; send them again "
                             "after Retry-After seconds")

    def depth(self) -> OutboxDepth:
        with self._uow() as uow:
            events, oldest = uow.outbox.depth()
        age = max((self._clock() - oldest).total_seconds(), 0.0) if oldest else 0.0
        return OutboxDepth(events, age)

    def drain(self, max_events: int | None = None) -> int:
        """Move waiting events into ClickHouse, oldest first; returns how many moved. Stops after
        `max_events` (default: what is there now). Raises when ClickHouse refuses: the entries wait."""
        limit = max_events if max_events is not None else max(self.depth().events, 1)
        moved = 0
        with self._drain_lock:  # one drain per process; claims keep processes apart
            with self._uow() as uow:
                unfinished = uow.outbox.claimed()
            for block in unfinished:
                moved += self._move(block)
            while moved < limit:
                block = uuid.uuid4().hex
                with self._uow() as uow:
                    seqs = uow.outbox.next_unclaimed(self._block_events)
                    if not seqs or not uow.outbox.claim(seqs, block):
                        break  # empty, or another process's drain took them
                    uow.commit()
                moved += self._move(block)
        if moved:
            log.info("outbox.drained", events=moved)
        return moved

    def _move(self, block: str) -> int:
        with self._uow() as uow:
            rows = uow.outbox.block(block)
        # the same block redone after a crash carries the same token: ClickHouse keeps it once
        self._events().insert(rows, f"outbox-{block}")
        with self._uow() as uow:
            uow.outbox.remove(block)
            uow.commit()
        return len(rows)
