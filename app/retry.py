"""Running a whole transaction again after a transient failure of the SQL store.

Services wrap a unit of work's whole transaction in `retry_transient`: a deadlock, a
serialization failure or a row changed under an optimistic lock is worth one more try; any
other failure goes to the caller."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm.exc import StaleDataError

T = TypeVar("T")

# PostgreSQL: serialization failure, deadlock detected, lock not available.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def is_transient(exc: BaseException) -> bool:
    """A failure that the same transaction, run again, can get past: a deadlock or
    serialization failure, SQLite's busy database, or a row another writer changed since we
    read it (the optimistic lock's StaleDataError)."""
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            return True
        return "database is locked" in str(exc.orig)
    return False


def retry_transient(work: Callable[[], T], attempts: int = 6) -> T:
    """Run `work` (one whole transaction) again after a transient failure, with a short
    jittered backoff; anything else, or the last attempt's failure, goes to the caller."""
    for attempt in range(attempts):
        try:
            return work()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")


def retry_lost_race(work: Callable[[], T], conflict: Exception, attempts: int = 3) -> T:
    """Run `work` (one whole transaction, read then write) again when a concurrent writer won a
    uniqueness race between its read and its write (IntegrityError): the next read sees the
    winner's row. After `attempts` lost races, `conflict` is raised (a 409, never a 500)."""
    for _attempt in range(attempts):
        try:
            return work()
        except IntegrityError:
            continue
    raise conflict
