"""The small interfaces the services depend on."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from app.stores.sql.uow import SqlUnitOfWork

Clock = Callable[[], datetime]
UnitOfWorkFactory = Callable[[], "SqlUnitOfWork"]


# --- what stores raise that callers handle (HTTP and the CLI map them to answers) ----------

class InvalidCursor(ValueError):
    """A pagination cursor that this API did not issue."""


class EmbeddedStoreBusy(RuntimeError):
    """Another process (usually `lethe serve`) has the embedded ClickHouse data directory open."""


# --- data that crosses between services and stores -----------------------------------------

class MessageRef(NamedTuple):
    """A stored message as holds name it, with its row id."""

    row_id: str
    message_id: str
    room_id: str | None
    subject_id: str | None


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

    def anonymise(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...

    def purge(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...

    def residual(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...


class ExternalErasureStep(Protocol):
    """A non-transactional store's part (ClickHouse): run between the claim and the commit
    that records it, so it must be idempotent; one batched statement for the whole batch."""

    name: str

    def anonymise(self, batch: ErasureBatch) -> Mapping[str, int]: ...

    def purge(self, batch: ErasureBatch) -> Mapping[str, int]: ...

    def residual(self, batch: ErasureBatch) -> Mapping[str, int]: ...


class KeyDestroyer(Protocol):
    """Destroys data keys inside the caller's transaction (app.services.keys.KeyService)."""

    def destroy(self, uow: SqlUnitOfWork, owners: Sequence[str], purpose: str | None = None) -> list[str]: ...


class DeadLetterFinder(Protocol):
    """Finds dead letters naming users, opening their sealed bodies (app.services.dead_letters)."""

    def mentioning(self, uow: SqlUnitOfWork, project_id: str, needles: Sequence[str]) -> dict[str, list[str]]: ...


class Suppressor(Protocol):
    """Lists purged users so their late events are dropped (app.services.suppressions)."""

    def suppress_purged(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]: ...


class JobKicker(Protocol):
    """Asks the scheduler to run a job as soon as possible (no-op without a scheduler)."""

    def __call__(self, job: str) -> None: ...
