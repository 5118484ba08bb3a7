"""Destroyed key rows leave the key table's files, not only its query results.

Deleting a key row is the erasure (app.services.keys); until the database rewrites the pages
that held it, the wrapped key can still be read from its files. SQLite (secure_delete) needs a
checkpoint, which is cheap: it runs after every erasure run that destroyed keys. PostgreSQL needs
VACUUM FULL, which rewrites the whole table under an exclusive lock: the key_compaction job runs
it every COMPACT_EVERY_SECONDS when the table changed, well within the hour the issue allows.
"""

from __future__ import annotations

from typing import Literal

import structlog

from app.ports import CompactionBlocked, KeyTableCompactor
from app.services.errors import Broken

log = structlog.get_logger(__name__)
COMPACT_WAIT_SECONDS = 30.0  # for transactions that can still see deleted keys to end
COMPACT_EVERY_SECONDS = 15 * 60.0  # the key_compaction job's interval: a key destroyed on PostgreSQL
# leaves the table's file within ~15 minutes (or the next run after an open transaction ends), well within the hour

Compaction = Literal["compacted", "unchanged", "postponed"]  # what the key_compaction job did


class CompactionFailed(Broken):
    """The key table could not be compacted now (named plainly; never carries key material)."""


class KeyCompaction:
    """When to compact the key table. KeyService.destroy tells it that this process destroyed
    keys (`destroyed`); the jobs call `after_run` and `if_changed`."""

    def __init__(self, compactor: KeyTableCompactor | None) -> None:
        self._compactor = compactor
        self._dirty = False  # keys destroyed since the last compaction (in this process)
        self._compacted_changes: int | None = None  # the table's change counter before the last compaction

    def destroyed(self) -> None:
        self._dirty = True

    def compact(self, *, wait_seconds: float = COMPACT_WAIT_SECONDS) -> None:
        """Compact now (see app.stores.sql.keys.KeyTableCompaction for what each database
        needs). Call it after the destroying transactions have committed."""
        if self._compactor is None:
            raise CompactionFailed("no key table compactor configured")
        try:
            self._compactor.compact(wait_seconds)
        except CompactionBlocked as exc:
            raise CompactionFailed(f"key table not compacted: {exc}") from None

    def after_run(self) -> bool:
        """After an erasure run: where compaction is cheap (SQLite's checkpoint), at once if this
        process destroyed keys. PostgreSQL's VACUUM FULL is left to the key_compaction job: it
        rewrites the whole table under an exclusive lock (4-9 us per live key), which must not
        lengthen the run that requests wait for."""
        if not self._dirty or self._compactor is None or not self._compactor.cheap:
            return False
        self._dirty = False
        return self._compacted("after_run")

    def if_changed(self) -> Compaction:
        """The key_compaction job: what any process deleted or re-wrapped since the last
        compaction leaves the key table's files. SQLite: a checkpoint, every time (cheap, and it
        also covers other processes' deletions). PostgreSQL: VACUUM FULL when the table's change
        counter moved since this process last compacted (or it has not yet); the counter is read
        first, so a change made meanwhile is caught next time. A compaction that cannot run now
        (older transactions still open) is logged, reported as "postponed" and retried by the
        next run."""
        if self._compactor is None:
            return "unchanged"
        changes = self._compactor.changes()
        if changes is not None and changes == self._compacted_changes:
            return "unchanged"
        if not self._compacted("job"):
            return "postponed"
        self._dirty, self._compacted_changes = False, changes
        return "compacted"

    def _compacted(self, when: str) -> bool:
        try:
            self.compact(wait_seconds=COMPACT_WAIT_SECONDS)
        except CompactionFailed as exc:
            log.warning("keys.compact_postponed", when=when, reason=str(exc).splitlines()[0])
            self._dirty = True
            return False
        return True
