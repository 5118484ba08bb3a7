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
