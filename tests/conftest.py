"""Shared fixtures: real stores only.

`engine` is parametrised over SQLite (a file) and this machine's PostgreSQL (a database of our
own, created per test worker and emptied between tests). ClickHouse is the embedded chDB engine,
one data directory per worker process (chDB allows one per process).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import Engine, create_engine, text

from app.bootstrap import Container
from app.config import Settings
from app.models import Base
from app.services.policies import PolicyBook
from app.stores.clickhouse.client import ClickHouse
from app.stores.clickhouse.schema import migrate as migrate_clickhouse
from app.stores.sql import migrations
from app.stores.sql.engine import make_engine

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("LETHE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SECRET = b"test-secret-key"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test worker, migrated once, dropped at the end."""
    name = f"lethe_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is needed for the tests (.ci/run starts it): {exc}")
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_log"))  # append-only for row DELETEs (a trigger)
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "audit_log":
                conn.execute(table.delete())
        conn.execute(text("INSERT INTO audit_head (id, seq, hash, keyed_from) VALUES (1, 0, :h, 1)"),
                     {"h": "0" * 64})


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'lethe.db'}")
        migrations.upgrade(engine)
    else:
        engine = make_engine(request.getfixturevalue("pg_url"))
        _empty(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> ClickHouse:
    ch = ClickHouse("chdb://" + str(tmp_path_factory.mktemp("clickhouse")))
    migrate_clickhouse(ch)
    return ch


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, engine: Engine) -> Settings:
    return Settings(database_url=str(engine.url), clickhouse_url="chdb://unused", policy_dir=ROOT / "policies",
                    secret_key=SECRET, scheduler=False, audit_checkpoints=tmp_path / "audit-checkpoints.jsonl")


@pytest.fixture
def container(settings: Settings, engine: Engine, clock: FakeClock, clickhouse: ClickHouse) -> Container:
    for table in ("events", "daily_metrics"):  # tests in one worker run one after another
        clickhouse.command(f"TRUNCATE TABLE {table}")
    container = Container(settings=settings, engine=engine, policies=PolicyBook.load(ROOT / "policies"),
                          clock=clock, clickhouse=clickhouse)
    # As `lethe serve` does with its scheduler (within 0.2 s there): an acknowledged webhook call
    # kicks the outbox's drain into ClickHouse. Here it runs at once, so that tests read their
    # events right after posting them; tests/integration/test_outbox.py leaves it off.
    container.kick = lambda job: container.outbox.drain() if job == "outbox" else None  # type: ignore[func-returns-value]
    return container


@pytest.fixture
def project(container: Container) -> dict[str, str]:
    """The partner's credentials, as `lethe project create` prints them."""
    created: dict[str, str] = msgspec.to_builtins(container.accounts.create_project("acme"))
    return created
