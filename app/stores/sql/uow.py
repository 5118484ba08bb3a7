"""The SQL unit of work: one transaction, its repositories, and the audit entries it commits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.domain.audit import AuditRecord
from app.stores.sql.audit_log import AuditLog
from app.stores.sql.integration import Callbacks, DeletionBatches
from app.stores.sql.keys import DESTROYED_PURPOSES, DataKeys
from app.stores.sql.operational import (
    Complaints,
    DeadLetters,
    Logins,
    Messages,
    Receipts,
    Suppressions,
)
from app.stores.sql.outbox import EventOutbox
from app.stores.sql.repositories import ConsoleSessions, Holds, IdempotencyKeys, JobRuns, Profiles, Projects
from app.stores.sql.requests import DeletionRequests
from app.stores.sql.subjects import Subjects


class SqlUnitOfWork:
    """`with uow: ...; uow.commit()`. Leaving the block without commit rolls back.

    Audit entries recorded with `audit()` are chained and written inside the same
    transaction at commit, as late as possible, so the lock on the chain head is held
    only for the final insert and the commit itself.
    """

    def __init__(self, session_factory: sessionmaker[Session], clock: Callable[[], datetime], chain_key: bytes) -> None:
        self._factory = session_factory
        self._clock = clock
        self._chain_key = chain_key  # keys the audit chain's hashes (derived from LETHE_SECRET_KEY)
        self._pending: list[AuditRecord] = []

    def now(self) -> datetime:
        return self._clock()

    def __enter__(self) -> SqlUnitOfWork:
        self.session = self._factory()
        self._pending = []
        self.projects = Projects(self.session)
        self.subjects = Subjects(self.session)
        self.profiles = Profiles(self.session)
        self.requests = DeletionRequests(self.session)
        self.idempotency = IdempotencyKeys(self.session)
        self.audit_log = AuditLog(self.session)
        self.job_runs = JobRuns(self.session)
        self.console_sessions = ConsoleSessions(self.session)
        self.receipts = Receipts(self.session)
        self.messages = Messages(self.session)
        self.complaints = Complaints(self.session)
        self.logins = Logins(self.session)
        self.dead_letters = DeadLetters(self.session)
        self.suppressions = Suppressions(self.session)
        self.keys = DataKeys(self.session)
        self.holds = Holds(self.session)
        self.batches = DeletionBatches(self.session)
        self.callbacks = Callbacks(self.session)
        self.outbox = EventOutbox(self.session)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.session.close()  # rolls back anything uncommitted; loaded objects stay readable

    @property
    def info(self) -> dict[str, Any]:
        """State kept for this transaction only, cleared at commit and rollback (the data keys
        it opened or created: app.services.keys)."""
        return self.session.info

    def flush(self) -> None:
        """Send pending changes now, inside the transaction (a later statement must see them)."""
        self.session.flush()

    def audit(self, record: AuditRecord) -> None:
        self._pending.append(record)

    def commit(self) -> None:
        if self._pending:
            self.audit_log.append(self._clock(), self._pending, self._chain_key)
            self._pending = []
        destroyed = self.session.info.get(DESTROYED_PURPOSES)
        if destroyed:  # every process drops its cached keys of these purposes (app.services.keys)
            self.keys.bump(destroyed)
        self.session.commit()
        self.session.info.clear()  # transaction-scoped state (see `info`)

    def rollback(self) -> None:
        self._pending = []
        self.session.rollback()
        self.session.info.clear()  # transaction-scoped state (see `info`)
