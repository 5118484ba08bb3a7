"""One clickhouse-connect client for the process: the embedded chDB engine or a server over HTTP."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from app.ports import EmbeddedStoreBusy

EMBEDDED_DEFAULTS = {"background_pool_size": "16"}


def replicated_database(database: str, cluster: str | None) -> str:
    """The engine clause of Lethe's database on a cluster: the Replicated database engine, keyed in
    Keeper by the cluster's name; the server's own `shard` and `replica` macros name this replica."""
    if cluster is None:
        return ""
    return f" ENGINE = Replicated('/clickhouse/databases/{cluster}/{database}', '{{shard}}', '{{replica}}')"


class ClickHouse:
    """Thin wrapper: parameter binding only (values are never formatted into SQL), and one
    statement at a time on the embedded engine, which is a single in-process instance."""

    def __init__(self, url: str, database: str = "lethe", cluster: str | None = None) -> None:
        self.url = url
        self.database = database
        self.embedded = url.startswith("chdb:")
        # LETHE_CLICKHOUSE_CLUSTER: Lethe's database uses the Replicated database engine (its DDL
        # reaches every replica through ClickHouse Keeper) and its tables Replicated* engines
        self.cluster = cluster
        self._lock: AbstractContextManager[Any] = threading.RLock() if self.embedded else nullcontext()
        self._lock_file: IO[str]
        self._client = self._connect()

    def _connect(self) -> Client:
        if self.embedded:
            parsed = urlparse(self.url)
            path = Path(parsed.path)
            self._claim_directory(path)
            # Engine options ride on the URL's query (chdb:///var/clickhouse?background_pool_size=8).
            # Mutations (APPLY PATCHES, DELETE) wait on the background pool, which chDB sizes at 2:
            # erasing across hundreds of daily partitions then takes minutes instead of seconds.
            options = {**EMBEDDED_DEFAULTS, **dict(parse_qsl(parsed.query))}
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}", chdb_options=options)
        else:
            parsed = urlparse(self.url)
            self.database = parsed.path.strip("/") or self.database
            client = clickhouse_connect.get_client(dsn=self.url, autogenerate_session_id=False)
        engine = replicated_database(self.database, self.cluster)
        client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}{engine}")
        client.database = self.database
        return client

    def _claim_directory(self, path: Path) -> None:
        """Only one process may open an embedded data directory: take an advisory lock first,
        so a second process fails at once with a message instead of chDB's engine error."""
        path.mkdir(parents=True, exist_ok=True)
        self._lock_file = (path / ".lethe.lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise EmbeddedStoreBusy(
                f"the embedded ClickHouse data directory {path} is in use by another process "
                "(is `lethe serve` or `lethe worker` running?). Stop it first, or let the running service do the work "
                "(its scheduler runs every job), or point LETHE_CLICKHOUSE_URL at a ClickHouse server."
            ) from None

    def command(self, sql: str, parameters: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self._client.command(sql, parameters=parameters, settings=settings)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None,
             settings: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        with self._lock:
            return self._client.query(sql, parameters=parameters, settings=settings).result_rows

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str],
               settings: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._client.insert(table, rows, column_names=list(columns), settings=settings)

    def ping(self) -> bool:
        try:
            return bool(self.rows("SELECT 1")[0][0] == 1)
        except ClickHouseError:
            return False

    def close(self) -> None:
        with self._lock:
            self._client.close()
            if self.embedded:
                self._lock_file.close()  # releases the directory lock
