"""A user seeded with unique marker values is erased; afterwards no marker is found anywhere:
SQL rows, ClickHouse rows read with patch parts off, the raw bytes of both stores' files, the
logs and the dead-letter store. A second user's data is intact, and aggregates do not change.

In grace mode the contract keeps the user's chat messages, anonymous ("messages stay visible
to others as from a deleted user"), so there the message text carries no marker; immediate
mode deletes the messages too."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from app.bootstrap import Container
from app.models import Base
from app.stores.clickhouse.client import ClickHouse
from app.stores.sql.engine import checkpoint
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import UNREADABLE, ch_rows, post, readable

M = "QZJMARK"  # every personal value of the erased user carries it
USER = f"uid-{M}-7"
OTHER = "bystander-1"


def seed(client: TestClient[Any], keys: dict[str, str], user: str, tag: str, message_text: str) -> None:
    common = {"user_name": f"Name {tag}", "nickname": f"Nick {tag}", "decrypted_user_id": f"dec-{tag}",
              "source_url": f"https://chat.example/{tag}", "platformUserAgent": f"Agent/{tag}"}
    batch = [
        frontend("session_started", user, created_at="2026-02-01T10:00:00Z", **common),
        frontend("name_set", user, created_at="2026-02-01T10:01:00Z", **common),
        frontend("avatar_set", user, created_at="2026-02-01T10:02:00Z", type="custom",
                 url=f"https://cdn.example/{tag}.png", **{k: v for k, v in common.items()}),
        frontend("message_sent", user, created_at="2026-02-01T10:03:00Z", message_id=f"msg-{len(user)}-{tag[:2]}",
                 room="r-1", text=message_text, messageType="text", **common),
        {"event": "user_login", "value": {"project": PROJECT, "external_user_id": user, "ip": f"10.0.0.{len(tag)}",
                                          "created_at": "2026-02-01T10:04:00Z"}},
    ]
    assert post(client, keys, batch).json()["accepted"] == len(batch)
    # a malformed envelope that mentions the user lands in the dead-letter store
    post(client, keys, [{"event": "session_started", "value": {"project": PROJECT, "user_id": user,
                                                              "created_at": f"bad-{tag}"}}])


def sql_dump(engine: Engine) -> str:
    with engine.connect() as conn:
        return "\n".join(repr(row) for table in Base.metadata.sorted_tables
                         for row in conn.execute(text(f"SELECT * FROM {table.name}")))


def files_with(directory: Path, marker: bytes) -> list[Path]:
    """Files under `directory` holding `marker`. ClickHouse's background merges remove parts
    while we walk: a file gone before we read it holds nothing any more."""
    found = []
    for root, _dirs, files in os.walk(directory):  # os.walk skips a directory that vanished (rglob raises)
        for name in files:
            path = Path(root) / name
            try:
                if marker in path.read_bytes():
                    found.append(path)
            except FileNotFoundError:
                continue
    return found


@pytest.mark.parametrize("mode", ["immediate", "grace"])
def test_erased_user_leaves_no_marker_anywhere(client: TestClient[Any], container: Container, engine: Engine,
                                               clickhouse: ClickHouse, clock: FakeClock,
                                               capfd: pytest.CaptureFixture[str], mode: str) -> None:
    keys: dict[str, str] = msgspec.to_builtins(container.accounts.create_project(PROJECT))
    seed(client, keys, USER, M, f"hello from {M}" if mode == "immediate" else "hello everyone")
    seed(client, keys, OTHER, "KEEPME", "hello from KEEPME")
    ch_dir = Path(clickhouse.url.removeprefix("chdb://"))
    events_before = len(ch_rows(container))
    # the checks can see the data while it is there: only through the keys, since it is sealed
    # at the door and never stored in plaintext in either store
    exported = client.get(f"/v1/subjects/{USER}/export", headers=bearer(keys["api_key"]))
    assert exported.status_code == 200 and M in exported.text
    assert any(M in str(r) for r in readable(container, ch_rows(container)))
    assert M not in sql_dump(engine) and not files_with(ch_dir, M.encode())

    created = client.post("/v1/deletion-requests", json={"user_id": USER, "reason": f"ticket {M}", "mode": mode},
                          headers=bearer(keys["api_key"])).json()
    container.erasure.anonymise(clock.now)
    container.erasure.purge(clock.now + timedelta(days=30))
    done = client.get(f"/v1/deletion-requests/{created['id']}", headers=bearer(keys["api_key"])).json()
    assert done["status"] == "completed"
    assert all(store["residual"] == 0 for store in done["evidence"].values())

    # SQL rows and ClickHouse rows (patch parts off: what is on disk), and what the keys still open
    assert M not in sql_dump(engine)
    assert client.get(f"/v1/subjects/{USER}/export", headers=bearer(keys["api_key"])).status_code == 404
    rows = readable(container, ch_rows(container))
    assert not [r for r in rows if M in str(r)]
    assert [r for r in rows if r["user_name"] == UNREADABLE]  # its key is gone
    assert len(rows) == events_before  # events stay, anonymous: aggregates unchanged
    distinct = container.clickhouse.rows(
        "SELECT uniqExact(subject_id) FROM events WHERE subject_id != toUUIDOrZero('')")
    assert distinct[0][0] == 2
    # the dead-letter store
    rejected = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    assert [r for r in rejected if "KEEPME" in r["body"]] and not [r for r in rejected if M in r["body"]]
    # the raw bytes of both stores' files
    if engine.dialect.name == "sqlite":
        checkpoint(engine)
        db = Path(str(engine.url.database))
        assert not files_with(db.parent, M.encode())
        assert files_with(db.parent, PROJECT.encode())  # the scan sees what is stored in plaintext
    assert not files_with(ch_dir, M.encode())
    # the other user is whole
    other = client.get(f"/v1/messages/msg-{len(OTHER)}-KE", headers=bearer(keys["api_key"])).json()
    assert other["state"] == "visible"
    kept = client.get(f"/v1/messages/msg-{len(USER)}-{M[:2]}", headers=bearer(keys["api_key"]))
    assert kept.status_code == (404 if mode == "immediate" else 200)
    if mode == "grace":
        assert kept.json()["state"] == "anonymised"
    assert [r for r in rows if r["user_name"] == "Name KEEPME"]
    # the logs
    out, err = capfd.readouterr()
    assert M not in out + err
