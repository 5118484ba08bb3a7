"""The small interfaces the services depend on."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self

from app.domain.audit import AuditRecord
from app.domain.policy import Handles

if TYPE_CHECKING:  # the repositories a unit of work hands out
    from app.ports.repositories import (
        AuditLogRepository,
        CallbacksRepository,
        ComplaintsRepository,
        ConsoleSessionsRepository,
        DataKeysRepository,
        DeadLettersRepository,
        DeletionBatchesRepository,
        DeletionRequestsRepository,
        EventOutboxRepository,
        HoldsRepository,
        IdempotencyKeysRepository,
        JobRunsRepository,
        LoginsRepository,
        MessagesRepository,
        ProfilesRepository,
        ProjectsRepository,
        ReceiptsRepository,
        SubjectsRepository,
        SuppressionsRepository,
    )

Clock = Callable[[], datetime]


class UnitOfWork(Protocol):
    """One SQL transaction and its repositories (app.stores.sql.uow.SqlUnitOfWork; the
    repositories' protocols are in app.ports.repositories).

    `with factory() as uow: ...; uow.commit()`; leaving the block without commit rolls back.
    Every query sits in a repository; services read and change the ORM rows they return.
    Audit entries recorded with `audit()` are written in the same transaction at commit."""

    @property
    def projects(self) -> ProjectsRepository: ...

    @property
    def subjects(self) -> SubjectsRepository: ...

    @property
    def profiles(self) -> ProfilesRepository: ...

    @property
    def requests(self) -> DeletionRequestsRepository: ...

    @property
    def idempotency(self) -> IdempotencyKeysRepository: ...

    @property
    def audit_log(self) -> AuditLogRepository: ...

    @property
    def job_runs(self) -> JobRunsRepository: ...

    @property
    def console_sessions(self) -> ConsoleSessionsRepository: ...

    @property
    def receipts(self) -> ReceiptsRepository: ...

    @property
    def messages(self) -> MessagesRepository: ...

    @property
    def complaints(self) -> ComplaintsRepository: ...

    @property
    def logins(self) -> LoginsRepository: ...

    @property
    def dead_letters(self) -> DeadLettersRepository: ...

    @property
    def suppressions(self) -> SuppressionsRepository: ...

    @property
    def keys(self) -> DataKeysRepository: ...

    @property
    def holds(self) -> HoldsRepository: ...

    @property
    def batches(self) -> DeletionBatchesRepository: ...

    @property
    def callbacks(self) -> CallbacksRepository: ...

    @property
    def outbox(self) -> EventOutboxRepository: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def now(self) -> datetime: ...

    @property
    def info(self) -> dict[str, Any]:
        """State kept for this transaction only (cleared at commit and rollback)."""
        ...

    def flush(self) -> None: ...

    def audit(self, record: AuditRecord) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


class CheckpointStore(Protocol):
    """Where signed audit checkpoints are kept outside the SQL store
    (app.stores.checkpoints.CheckpointFile)."""

    def append(self, checkpoint: dict[str, Any]) -> None: ...

    def read(self) -> list[Any]:
        """Every checkpoint kept, oldest first ([] before the first)."""
        ...


class EventStore(Protocol):
    """The analytics events (app.stores.clickhouse.events.ClickHouseEventStore)."""

    def insert(self, rows: Sequence[EventRow], dedup_token: str) -> None:
        """Idempotent per `dedup_token`: a retried insert adds nothing."""
        ...

    def covered(self, project: str, rooms: Sequence[str], messages: Sequence[str]) -> list[dict[str, Any]]:
        """The rows in these rooms or about these messages (what a room or message hold keeps)."""
        ...

    def reseal(self, project: str, values: Mapping[str, Mapping[str, str]]) -> None:
        """Replace sealed personal values: dedup key -> column -> new ciphertext."""
        ...

    def of_subject(self, subject_id: str) -> list[dict[str, Any]]: ...

    def naming(self, project: str, subject_id: str) -> list[dict[str, Any]]:
        """Other actors' events of a project whose properties name this subject."""
        ...

    def count_for(self, subject_id: str) -> dict[str, int]: ...


class EventLifecycle(Protocol):
    """Aggregates and whole-table removals of events
    (app.stores.clickhouse.lifecycle.ClickHouseEventLifecycle)."""

    def days_to_aggregate(self, before: date, recount_days: int = 2) -> list[date]: ...

    def aggregate(self, day: date, now: datetime) -> None: ...

    def metrics(self, project: str, since: date, until: date) -> list[dict[str, Any]]: ...

    def expire_before(self, cutoff: date, held: Held) -> dict[str, Any]:
        """Every event older than `cutoff` except held ones."""
        ...

    def delete_project(self, project: str, held: Held, before: datetime | None = None) -> int: ...

    def delete_project_metrics(self, project: str) -> int:
        """Offboarding: the project's daily aggregates (rows removed)."""
        ...


class KeyTableCompactor(Protocol):
    """Makes deleted key rows leave the key table's files, not only its query results
    (app.stores.sql.keys.KeyTableCompaction)."""

    cheap: bool  # cheap enough to run after every erasure run (SQLite's checkpoint); else a job of its own

    def compact(self, wait_seconds: float) -> None:
        """Raises CompactionBlocked when it cannot run now."""
        ...

    def changes(self) -> int | None:
        """A counter of key rows deleted or rewritten by any process (None: not tracked)."""
        ...


# --- what stores raise that callers handle (HTTP and the CLI map them to answers) ----------

class InvalidCursor(ValueError):
    """A pagination cursor that this API did not issue."""


class CompactionBlocked(RuntimeError):
    """The key table could not be compacted now (older transactions still open, or its lock
    not granted in time); the next run retries. Names what blocked it, never key material."""


class EmbeddedStoreBusy(RuntimeError):
    """Another process (usually `lethe serve`) has the embedded ClickHouse data directory open."""


# --- data that crosses between services and stores -----------------------------------------

class MessageRef(NamedTuple):
    """A stored message as holds name it, with its row id."""

    row_id: str
    message_id: str
    room_id: str | None
    subject_id: str | None


# the events table's subject for events no user is behind (the column is not nullable)
NO_SUBJECT = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class EventRow:
    """One analytics event as the events table stores it (personal values already sealed)."""

    project: str
    event: str
    at: datetime
    received_at: datetime
    subject_id: str | None
    actor_kind: str
    dedup_key: str
    room_id: str
    message_id: str
    platform: str
    personal: Mapping[str, str]
    properties: Mapping[str, Any]


class StoredKey(NamedTuple):
    """A data key as stored: wrapped under a key-encryption key (KEK) version. A named tuple:
    ingest reads hundreds of keys per batch, and a frozen dataclass costs several times more
    to build."""

    id: str
    owner: str
    purpose: str
    kek_version: int
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class KekVersion:
    """A KEK version on record: `check` proves which secret derived it."""

    version: int
    check: str
    retired_at: datetime | None


@dataclass(frozen=True, slots=True)
class Held:
    """What standing holds cover, in the terms of the events table."""

    projects: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()  # subject ids of held users
    rooms: frozenset[tuple[str, str]] = frozenset()  # (project, room id)
    messages: frozenset[tuple[str, str]] = frozenset()  # (project, message id)

    def __bool__(self) -> bool:
        return bool(self.projects or self.subjects or self.rooms or self.messages)


@dataclass(frozen=True, slots=True)
class ErasureBatch:
    """The subjects one job run erases, with what each step needs to find their rows."""

    project_of: Mapping[str, str]  # subject_id -> project_id
    user_of: Mapping[str, str]  # subject_id -> platform user id (read before the link goes)
    immediate: frozenset[str] = field(default_factory=frozenset)  # subjects erased in immediate mode
    asked: frozenset[str] = field(default_factory=frozenset)  # subjects whose erasure the user or partner asked for
    # what standing room and message holds keep (under their own keys): left in place
    kept_rooms: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (project id, room id)
    kept_messages: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (project id, message id)

    @property
    def subject_ids(self) -> list[str]:
        return sorted(self.project_of)


class SqlErasureStep(Protocol):
    """One SQL table's part of an erasure, run inside the transaction that records it.

    Every method is idempotent and returns counts per subject id. `anonymise` runs at once on
    a request (unlinkable, restorable); `purge` after grace (at once in immediate mode);
    `residual` counts what the purge should have left nothing of.
    """

    name: str  # evidence key, e.g. "sql.profiles"
    handles: Handles  # what it does to which personal data (checked against the data map)

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...


class ExternalErasureStep(Protocol):
    """A non-transactional store's part (ClickHouse): run between the claim and the commit
    that records it, so it must be idempotent; one batched statement for the whole batch."""

    name: str
    # the evidence's word for what `purge` did to the rows it counts: "deleted", or
    # "anonymised" where the rows stay, unreadable (their keys destroyed)
    purged_as: str

    def anonymise(self, batch: ErasureBatch) -> Mapping[str, int]: ...

    def purge(self, batch: ErasureBatch) -> Mapping[str, int]: ...

    def residual(self, batch: ErasureBatch) -> Mapping[str, int]: ...


class KeyDestroyer(Protocol):
    """Destroys data keys inside the caller's transaction (app.services.keys.KeyService)."""

    def destroy(self, uow: UnitOfWork, owners: Sequence[str], purpose: str | None = None) -> list[str]: ...


class DeadLetterFinder(Protocol):
    """Finds dead letters naming users, opening their sealed bodies, and erases them
    (app.services.dead_letters)."""

    def mentioning(self, uow: UnitOfWork, project_id: str, needles: Sequence[str], *,
                   except_held: bool = False) -> dict[str, list[str]]: ...
    def erase(self, uow: UnitOfWork, project_id: str, needles: Sequence[str]) -> dict[str, list[str]]: ...


class Suppressor(Protocol):
    """Lists purged users so their late events are dropped (app.services.suppressions)."""

    def suppress_purged(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...


class JobKicker(Protocol):
    """Asks the scheduler to run a job as soon as possible (no-op without a scheduler)."""

    def __call__(self, job: str) -> None: ...
