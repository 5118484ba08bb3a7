"""Engines for SQLite (embedded default) and PostgreSQL (production), same models and code."""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def json_text(value: Any) -> str:
    """JSON as Lethe writes it to SQL (msgspec; the json module for what msgspec refuses)."""
    try:
        return _ENCODER.encode(value).decode()
    except (TypeError, ValueError):  # what msgspec refuses (a lone surrogate): the json module's escaped form
        return json.dumps(value)


def _json_value(text: str | bytes) -> Any:
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:  # written by the json module (an escaped lone surrogate): read it so
        return json.loads(text)


def make_engine(url: str, **kwargs: Any) -> Engine:
    # hide_parameters: bound values (user ids, names) never appear in errors or logs.
    kwargs.setdefault("hide_parameters", True)
    # JSON columns (request evidence, audit details...) through msgspec: the anonymise job
    # writes and reads 10,000 evidence documents a batch, and the json module took 5-7 % of it.
    # The audit chain's hashes do not depend on this: they are computed over their own
    # canonical form (app.domain.audit.canonical), never over the column's text.
    kwargs.setdefault("json_serializer", json_text)
    kwargs.setdefault("json_deserializer", _json_value)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    if parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    # No pre-ping (a round trip per checkout): connections are recycled instead, and a
    # request that meets a dropped connection fails once with a 5xx and is retried.
    return create_engine(url, pool_recycle=1800, pool_size=20, max_overflow=20, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    _owner_only(make_url(url).database)
    # pysqlite's own transaction handling is replaced with explicit BEGIN IMMEDIATE (the
    # recipe in SQLAlchemy's SQLite docs): one writer at a time, waiting instead of failing.
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a 2xx means durably stored
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")  # deleted personal data is zeroed, not left in free pages
        cursor.execute("PRAGMA busy_timeout=30000")
        # 32 MiB of page cache (SQLite's default is 2 MiB): an erasure run deletes keys and
        # updates requests spread over tens of MiB of pages; with the small cache it spills
        # and re-reads them, 0.05-0.07 s of the 0.2 s that destroying 10,000 keys takes
        # (bench/erasure). A ceiling per connection, not an allocation.
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _owner_only(database: str | None) -> None:
    """The database file is created 0600 (and an existing one narrowed to it). SQLite gives
    its WAL and shared-memory files the database file's mode."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(database, 0o600)


def checkpoint(engine: Engine) -> None:
    """Fold SQLite's WAL into the database file and truncate it, so erased rows leave no copy there."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()  # outside any transaction, or the checkpoint cannot finish
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
    finally:
        raw.close()


def ping(engine: Engine) -> None:
    """One round trip to the database (raises when it does not answer)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
