"""No personal value is ever stored in plaintext (issue 7, "encrypt at the door").

Every event type of the platform's reference (shared/seeds: the frontend table with each
type's own properties, and the backend and admin examples) is sent with a unique canary in
every field that can hold something personal: user ids, names, texts, URLs, IPs, user agents,
user ids inside lists, and every unknown property. Then the stores' files are read as bytes:
- SQLite: the database file and its WAL;
- PostgreSQL: every table, index and TOAST file of the database, read with
  `pg_read_binary_file` after a CHECKPOINT;
- ClickHouse: every file under the chDB directory;
and the logs. No canary may be found anywhere. Each scan first proves that it sees what the
stores do keep in plaintext (a message id, a room id), so a scan that reads nothing fails.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from app.bootstrap import Container
from app.stores.clickhouse.client import ClickHouse
from tests.fixtures.platform import ADMIN, BACKEND, PROJECT, frontend
from tests.http.conftest import bearer

# the platform's event reference (a copy of shared/seeds/platform-analytics-and-data-deletion.txt)
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "platform-analytics-and-data-deletion.txt"
# Structural values stored as they are by design (policies/default.toml classifies them as not
# personal): the project, times, room and message ids, the platform, enumerations that drive
# Lethe's own logic (a complaint's type, a moderation action).
STRUCTURAL = frozenset({"project", "created_at", "event_name", "room_id", "room", "event_id", "message_id",
                        "platform", "type", "reportType", "report_type", "action"})
PLAIN_MESSAGE_ID = "plainmsg-5521-zq"  # stored in plaintext: each scan must find it
PLAIN_ROOM_ID = "plainroom-7730-zq"
_ROW = re.compile(r"^([a-z][a-z0-9_-]*) \| [^|]* \| (.*) \|$")
_PROPERTY = re.compile(r"(?:^|, )([A-Za-z_]+):")


def frontend_reference() -> dict[str, list[str]]:
    """Event type -> its own properties, from the reference's frontend tables."""
    lines = SEED.read_text().split("Backend Events")[0].splitlines()
    found: dict[str, list[str]] = {}
    for line in lines:
        if match := _ROW.match(line.strip()):
            cell = match.group(2).strip()
            found[match.group(1)] = [] if cell == "-" else _PROPERTY.findall(cell)
    return found


class Canaries:
    def __init__(self) -> None:
        self.issued: list[str] = []
        self._n = itertools.count()

    def new(self) -> str:
        value = f"cnry{next(self._n):04d}x7"
        self.issued.append(value)
        return value

    def fill(self, value: Any, key: str = "") -> Any:
        """Every string in `value` (nested, lists included) becomes a canary, except structural keys."""
        if isinstance(value, dict):
            return {k: v if k in STRUCTURAL else self.fill(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v, key) for v in value]
        return self.new() if isinstance(value, str) else value


def envelopes(canaries: Canaries) -> list[dict[str, Any]]:
    reference = frontend_reference()
    assert len(reference) > 60, "the seed's frontend tables were not read"
    sent: list[dict[str, Any]] = []
    for event, properties in sorted(reference.items()):
        envelope = frontend(event, **{p: "x" for p in properties})
        envelope["value"]["speaker_user_ids"] = ["x", "x"]  # user ids inside a list
        sent.append(envelope)
    sent += [copy.deepcopy(e) for e in BACKEND + ADMIN]
    filled = []
    for envelope in sent:
        envelope = {**envelope, "value": canaries.fill(envelope["value"])}
        if "key" in envelope:
            envelope["key"] = canaries.new()
        envelope["value"]["created_at"] = "2026-02-01T10:00:00Z"
        filled.append(envelope)
    # the message events refer to one message, kept in plaintext (its id is not personal)
    for envelope in filled:
        if "message_id" in envelope["value"] or envelope["event"].startswith("message"):
            envelope["value"]["message_id"] = PLAIN_MESSAGE_ID
        if "room_id" in envelope["value"]:
            envelope["value"]["room_id"] = PLAIN_ROOM_ID
    return filled


def directory_bytes(directory: Path) -> bytes:
    """Every file under `directory`; ClickHouse's merges remove parts while we read: a file
    gone before we read it holds nothing any more."""
    chunks = []
    for root, _dirs, files in os.walk(directory):  # os.walk skips a directory that vanished (rglob raises)
        for name in files:
            try:
                chunks.append((Path(root) / name).read_bytes())
            except FileNotFoundError:
                continue
    return b"".join(chunks)


def sqlite_bytes(engine: Engine) -> bytes:
    path = Path(str(engine.url.database))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def postgres_bytes(engine: Engine) -> bytes:
    """Every table, index and TOAST relation of the database, as its files on disk."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))
        paths = list(conn.execute(text(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE (n.nspname = 'public' OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE reltoastrelid <> 0) "
            "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT reltoastrelid FROM pg_class))) "
            "AND c.relkind IN ('r', 'i', 't') AND pg_relation_filepath(c.oid) IS NOT NULL")).scalars())
        assert paths
        chunks = []
        for path in paths:
            size = conn.execute(text("SELECT (pg_stat_file(:p, true)).size"), {"p": path}).scalar() or 0
            if size:
                chunks.append(conn.execute(text("SELECT pg_read_binary_file(:p, 0, :n, true)"),
                                           {"p": path, "n": size}).scalar() or b"")
        return b"".join(chunks)


@pytest.mark.parametrize("store_ip", [False, True])
def test_no_canary_reaches_any_store_file_or_log(client: TestClient[Any], container: Container, engine: Engine,
                                                 clickhouse: ClickHouse, capfd: pytest.CaptureFixture[str],
                                                 store_ip: bool) -> None:
    from dataclasses import replace

    keys = container.accounts.create_project(PROJECT)
    container.policies.projects[PROJECT] = replace(container.policies.default, store_ip=store_ip)
    canaries = Canaries()
    batch = envelopes(canaries)
    answer = client.post("/v1/events", json=batch, headers=bearer(keys.webhook_token)).json()
    assert answer["rejected"] == [] and answer["accepted"] == len(batch), answer
    # a deletion request's free-text reason, and a body that cannot be parsed (a dead letter)
    reason = canaries.new()
    client.post("/v1/deletion-requests", json={"user_id": canaries.new(), "reason": reason},
                headers=bearer(keys.api_key))
    dead = canaries.new()
    client.post("/v1/events", content=f'{{"event": "x", "value": "{dead}"'.encode(),
                headers=bearer(keys.webhook_token))
    container.keys.forget()

    out, err = capfd.readouterr()
    stores = {"sql": sqlite_bytes(engine) if engine.dialect.name == "sqlite" else postgres_bytes(engine),
              "clickhouse": directory_bytes(Path(clickhouse.url.removeprefix("chdb://"))),
              "logs": (out + err).encode()}
    assert PLAIN_MESSAGE_ID.encode() in stores["sql"], "the SQL scan does not see what is stored"
    assert PLAIN_ROOM_ID.encode() in stores["clickhouse"], "the ClickHouse scan does not see what is stored"
    assert len(canaries.issued) > 300  # every event type's fields were covered
    found = sorted((c, where) for c in canaries.issued for where, blob in stores.items() if c.encode() in blob)
    assert found == [], f"personal values found in plaintext (canary, where): {found[:10]}"
