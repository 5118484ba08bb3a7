"""The key table's repository: wrapped data keys per (owner, purpose) and the KEK versions.

Rows come back as plain `StoredKey` values, not ORM objects: keys are read in bulk on every
ingest batch, rewritten by rotation and deleted by erasure, and an identity map would only
hold stale copies of key material for longer.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, bindparam, delete, func, inspect, literal, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.models import DataKey, KeyEncryptionKey, KeyGeneration
from app.ports import CompactionBlocked, KekVersion, StoredKey
from app.stores.sql.engine import checkpoint
from app.stores.sql.operational import insert_ignoring_conflicts, insert_rows
from app.stores.sql.queries import is_postgresql, member_of, rowcount

CHUNK = 500  # owners per IN (...): far below SQLite's bound-parameter limit
_KEYS: Table = DataKey.__table__  # type: ignore[assignment]
_KEKS: Table = KeyEncryptionKey.__table__  # type: ignore[assignment]
_GENERATIONS: Table = KeyGeneration.__table__  # type: ignore[assignment]
DESTROYED_PURPOSES = "lethe.keys_destroyed"  # session.info: purposes whose keys this transaction destroyed


def _owner_sets(session: Session, owners: Sequence[str]) -> Iterator[Sequence[str]]:
    """The distinct owners, in the sets one statement takes: on PostgreSQL all of them (one
    array parameter, `member_of`), on SQLite CHUNK at a time."""
    wanted = sorted(set(owners))
    if is_postgresql(session):
        if wanted:
            yield wanted
        return
    for start in range(0, len(wanted), CHUNK):
        yield wanted[start:start + CHUNK]


_OPENING = (_KEYS.c.id, _KEYS.c.owner, _KEYS.c.purpose, _KEYS.c.kek_version, _KEYS.c.wrapped)  # StoredKey's fields


def _stored(row: Any) -> StoredKey:
    return StoredKey(row.id, row.owner, row.purpose, row.kek_version, bytes(row.wrapped))


class DataKeys:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- data keys -----------------------------------------------------------------------

    def get(self, owners: Sequence[str], purpose: str) -> dict[str, StoredKey]:
        """owner -> its key of this purpose, for the owners that have one."""
        found: dict[str, StoredKey] = {}
        for chunk in _owner_sets(self.session, owners):
            # only what opening a key needs: converting created_at doubled the cost per key
            rows = self.session.execute(select(*_OPENING).where(_KEYS.c.purpose == purpose,
                                                                member_of(self.session, _KEYS.c.owner, chunk)))
            found.update((row.owner, _stored(row)) for row in rows)
        return found

    def having(self, owners: Sequence[str], purpose: str) -> set[str]:
        """The owners that have a key of this purpose (no key material read: erasure counts)."""
        found: set[str] = set()
        for chunk in _owner_sets(self.session, owners):
            found.update(self.session.scalars(select(_KEYS.c.owner).where(
                _KEYS.c.purpose == purpose, member_of(self.session, _KEYS.c.owner, chunk))))
        return found

    def create_missing(self, rows: Sequence[Mapping[str, Any]]) -> list[StoredKey]:
        """Insert keys (id, owner, purpose, kek_version, wrapped, created_at) unless the owner
        already has one of that purpose, then return what is stored for those owners. Two
        processes creating the same owner's key end with one key, and both get that one."""
        insert_ignoring_conflicts(self.session, _KEYS, rows)
        stored: list[StoredKey] = []
        by_purpose: dict[str, list[str]] = {}
        for row in rows:
            by_purpose.setdefault(row["purpose"], []).append(row["owner"])
        for purpose, owners in by_purpose.items():
            stored.extend(self.get(owners, purpose).values())
        return stored

    def has_keyring(self) -> bool:
        """Whether the key-encryption key table exists yet (a database not migrated has none)."""
        return inspect(self.session.connection()).has_table(_KEKS.name)

    def insert_new(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert keys for owners that cannot have one yet (ids just made up in this
        transaction): no conflict to settle and nothing to read back."""
        insert_rows(self.session, _KEYS, rows)

    def owners_between(self, low: str, high: str, purpose: str) -> list[str]:
        """Owners in [low, high) with a key of this purpose: e.g. a project's day keys
        ("events:<project>:<YYYY-MM-DD>") before a date, as ISO dates sort as strings."""
        return list(self.session.scalars(select(_KEYS.c.owner).where(
            _KEYS.c.purpose == purpose, _KEYS.c.owner >= low, _KEYS.c.owner < high)))

    def destroy(self, owners: Sequence[str], purposes: Sequence[str]) -> list[str]:
        """Physically DELETE the owners' keys of these purposes; the owners of the keys
        deleted, one entry per key (DELETE ... RETURNING: no separate count query). The
        purposes are named, never left open: the primary key leads with the purpose, so
        `owner IN (...)` alone would read the whole table."""
        deleted: list[str] = []
        for chunk in _owner_sets(self.session, owners):
            statement = delete(_KEYS).where(_KEYS.c.purpose.in_(sorted(set(purposes))),
                                            member_of(self.session, _KEYS.c.owner, chunk))
            deleted.extend(self.session.scalars(statement.returning(_KEYS.c.owner)))
        if deleted:  # their purposes' generations move on at commit (`bump`, by SqlUnitOfWork)
            self.session.info.setdefault(DESTROYED_PURPOSES, set()).update(purposes)
        return deleted

    def generations(self) -> dict[str, int]:
        """purpose -> how many transactions have destroyed keys of it (0 if none ever has)."""
        return {str(p): int(g) for p, g in self.session.execute(select(_GENERATIONS.c.purpose,
                                                                       _GENERATIONS.c.generation))}

    def bump(self, purposes: Collection[str]) -> None:
        """Move these purposes' generations on: the last statement of a transaction that
        destroyed keys of them, so their rows stay locked (PostgreSQL) only while it commits.
        In purpose order, the one lock order every such transaction uses."""
        insert = postgresql.insert if is_postgresql(self.session) else sqlite.insert
        statement = insert(_GENERATIONS).values([{"purpose": p, "generation": 1} for p in sorted(purposes)])
        self.session.execute(statement.on_conflict_do_update(
            index_elements=[_GENERATIONS.c.purpose], set_={"generation": _GENERATIONS.c.generation + 1}))

    def under_older_versions(self, version: int, after: StoredKey | None, limit: int) -> list[StoredKey]:
        """The next keys (in primary key order, after the key `after`) still wrapped under a
        version below `version`: rotation walks the table in keyset-paginated batches."""
        primary_key = tuple_(_KEYS.c.purpose, _KEYS.c.owner)
        query = select(*_OPENING).where(_KEYS.c.kek_version < version).order_by(*primary_key.clauses).limit(limit)
        if after is not None:
            query = query.where(primary_key > tuple_(literal(after.purpose), literal(after.owner)))
        return [_stored(row) for row in self.session.execute(query)]

    def rewrap(self, rows: Sequence[tuple[StoredKey, int, bytes]]) -> int:
        """(key as read, new version, wrapped) per key; a key deleted, replaced or already
        re-wrapped meanwhile is left alone (its id and old version in the WHERE clause). Rows
        changed."""
        if not rows:
            return 0
        statement = (update(_KEYS).where(_KEYS.c.owner == bindparam("o"), _KEYS.c.purpose == bindparam("p"),
                                         _KEYS.c.id == bindparam("kid"), _KEYS.c.kek_version == bindparam("old"))
                     .values(kek_version=bindparam("new"), wrapped=bindparam("w")))
        params = [{"o": k.owner, "p": k.purpose, "kid": k.id, "old": k.kek_version, "new": new, "w": wrapped}
                  for k, new, wrapped in rows]
        result = self.session.connection().execute(statement, params)
        return rowcount(result)

    def count_by_version(self) -> dict[int, int]:
        rows = self.session.execute(select(_KEYS.c.kek_version, func.count()).group_by(_KEYS.c.kek_version))
        return {int(v): int(n) for v, n in rows}

    # --- key-encryption key versions -----------------------------------------------------

    def kek_versions(self) -> dict[int, KekVersion]:
        rows = self.session.execute(select(_KEKS.c.version, _KEKS.c.check, _KEKS.c.retired_at))
        return {int(r.version): KekVersion(int(r.version), r.check, r.retired_at) for r in rows}

    def current_kek(self) -> KekVersion | None:
        """The newest version: new keys are wrapped under it."""
        row = self.session.execute(select(_KEKS.c.version, _KEKS.c.check, _KEKS.c.retired_at)
                                   .order_by(_KEKS.c.version.desc()).limit(1)).first()
        return None if row is None else KekVersion(int(row.version), row.check, row.retired_at)

    def add_kek(self, version: int, check: str, now: datetime) -> None:
        """Record a version unless it exists (two processes starting the first one agree)."""
        insert_ignoring_conflicts(self.session, _KEKS, [{"version": version, "check": check, "created_at": now,
                                                         "retired_at": None}])

    def retire_below(self, version: int, now: datetime) -> int:
        statement = (update(_KEKS).where(_KEKS.c.version < version, _KEKS.c.retired_at.is_(None))
                     .values(retired_at=now))
        return rowcount(self.session.execute(statement))


COMPACT_LOCK_TIMEOUT = "10s"  # VACUUM FULL gives up rather than queue the service behind it
# Other sessions whose transaction (and so possibly snapshot) predates `since`. Any database: the
# test suite found VACUUM FULL keeping a deleted key while only another database's sessions were
# busy (some backends hold back the horizon of every database), so we wait for those too.
_OLDER_TRANSACTIONS = text(
    "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
    "AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND xact_start < :since ORDER BY pid")


class KeyTableCompaction:
    """Makes destroyed key rows leave the key table's files, not only its query results.

    SQLite: `secure_delete=ON` (set on every connection) zeroes a deleted row in its page;
    the WAL still holds earlier copies of that page until a TRUNCATE checkpoint folds it in.

    PostgreSQL (measured on 15 with `pg_read_binary_file(pg_relation_filepath(...))` after
    CHECKPOINT, 60-byte wrapped keys, tables of 1 to 500 rows): a DELETE leaves the tuple
    in its page; plain `VACUUM` compacts the page but does not zero the space it frees, so
    a deleted tuple that sat next to the free space (the last one written on its page) stays
    readable in the file: found after VACUUM in 2 of 7 layouts. `VACUUM FULL` writes a new
    file with the live rows only (the old file is emptied at commit) and left no deleted
    key in any layout: the cheapest statement that works. Two limits, both measured:
    - it copies "recently dead" rows, those a snapshot older than the DELETE can still see
      (an open transaction, an autovacuum ANALYZE): the key stayed in the new file. So we
      first wait, up to `wait_seconds`, for every such transaction in this database to end,
      and raise CompactionBlocked (naming the pids) if one does not; the next run retries.
      Replication slots / hot_standby_feedback hold rows the same way and are not checked.
    - it holds an ACCESS EXCLUSIVE lock for its run (~9 µs per live key: 0.9 s for 98k
      keys, 1.7 s for 198k), hence the lock_timeout.
    No CHECKPOINT here (it needs superuser or pg_checkpoint): the new file is written
    directly. PostgreSQL's WAL and base backups keep wrapped copies: rotation then retiring
    the old KEK deals with those, not this.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.cheap = engine.dialect.name == "sqlite"  # a checkpoint: cheap enough after every job

    def changes(self) -> int | None:
        """PostgreSQL: how many key rows have been deleted or rewritten (re-wrapped) since the
        server's statistics began, in any process; it moves with every such change, so a
        compaction is due when it differs from the value read before the last one. Cumulative,
        so the plain VACUUMs autovacuum runs (which reset the dead-row count but leave deleted
        bytes in the pages) cannot hide a deletion. Reported by each backend within seconds of
        its commit. None on SQLite (its checkpoint is always cheap) or when the server does not
        count (track_counts off): compact every time then."""
        if self.cheap:
            return None
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.execute(text("SELECT current_setting('track_counts')")).scalar() != "on":
                return None
            counted = conn.execute(text("SELECT n_tup_del + n_tup_upd FROM pg_stat_user_tables "
                                        "WHERE relid = 'data_keys'::regclass")).scalar()
        return None if counted is None else int(counted)

    def compact(self, wait_seconds: float) -> None:
        if self.cheap:
            checkpoint(self._engine)
            return
        try:
            self._vacuum_full(wait_seconds)
        except DBAPIError as exc:  # lock_timeout, or the server went away: the next run retries
            raise CompactionBlocked(str(exc.orig).splitlines()[0]) from None

    def _vacuum_full(self, wait_seconds: float) -> None:
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            since = conn.execute(text("SELECT clock_timestamp()")).scalar()
            deadline = time.monotonic() + wait_seconds
            while blockers := list(conn.execute(_OLDER_TRANSACTIONS, {"since": since}).scalars()):
                if time.monotonic() >= deadline:
                    raise CompactionBlocked(f"transactions older than the key deletion are still open "
                                            f"(pids {', '.join(map(str, blockers))}); retry later")
                time.sleep(0.05)
            conn.execute(text(f"SET lock_timeout = '{COMPACT_LOCK_TIMEOUT}'"))
            conn.execute(text("VACUUM FULL data_keys"))
