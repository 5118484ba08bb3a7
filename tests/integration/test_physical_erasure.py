"""Erased personal data is gone from the SQLite file's bytes, not only from query results."""

from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.bootstrap import Container
from app.domain.requests import Mode
from app.stores.sql.engine import checkpoint
from tests.conftest import FakeClock
from tests.integration.test_deletion_requests import request
from tests.integration.test_erasure import add_profile

MARKER = "ZQXMARKER"


def raw_bytes(engine: Engine) -> bytes:
    path = Path(str(engine.url.database))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_sqlite_file_keeps_no_trace_of_an_erased_user(container: Container, project: dict[str, str],
                                                      clock: FakeClock, engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("raw-file check is for the embedded SQLite store")
    user = f"user-{MARKER}-1"
    add_profile(container, user, clock)
    add_profile(container, "bystander", clock)
    request(container, user, Mode.IMMEDIATE, reason=f"reason {MARKER}")
    checkpoint(engine)
    assert MARKER.encode() in raw_bytes(engine)  # the check can see the data while it is there

    summary = container.erasure.anonymise(clock.now)  # immediate: anonymised and purged in one run
    assert summary.processed == 1

    data = raw_bytes(engine)
    assert MARKER.encode() not in data
    assert b"Name of bystander" in data  # another user's data is untouched
    assert not Path(f"{engine.url.database}-wal").exists() or Path(f"{engine.url.database}-wal").stat().st_size == 0


def test_every_sqlite_connection_is_durable_zeroes_deletions_and_has_room_for_an_erasure_run(
        engine: Engine) -> None:
    """What the guarantees above rest on, on each pooled connection: WAL with a full sync (a
    2xx means stored), secure_delete (a deleted row is zeroed in its page), and a page cache
    large enough for an erasure run's key deletions not to spill (bench/erasure, step b)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    connections = [engine.raw_connection() for _ in range(2)]
    try:
        for connection in connections:
            cursor = connection.cursor()
            pragmas = {name: cursor.execute(f"PRAGMA {name}").fetchone()[0]
                       for name in ("journal_mode", "synchronous", "secure_delete", "foreign_keys", "cache_size")}
            assert pragmas == {"journal_mode": "wal", "synchronous": 2, "secure_delete": 1, "foreign_keys": 1,
                               "cache_size": -32768}
    finally:
        for connection in connections:
            connection.close()
