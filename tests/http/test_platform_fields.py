"""The platform's fields as its builds actually send them (issue 11 §9): a complaint type in
`type`, a name given only as `nickname`, and `message_changed` carrying the new text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from app.bootstrap import Container
from app.domain.audit import subject_hash
from app.models import AuditEntry, Complaint, Message
from tests.conftest import SECRET
from tests.fixtures.platform import PROJECT, frontend
from tests.http.test_events_api import opened_profile, opened_text, post, subject_id

AUTHOR = "author-1"


def stored_text(container: Container, message_id: str) -> str | None:
    return opened_text(container, message_id)


def edit(text: str, at: str, user: str = AUTHOR, message_id: str = "m-1") -> dict[str, Any]:
    return frontend("message_changed", user, message_id=message_id, text=text, created_at=at)


def sent(text: str, at: str, message_id: str = "m-1") -> dict[str, Any]:
    return frontend("message_sent", AUTHOR, message_id=message_id, text=text, room="r-1", created_at=at)


def test_a_complaint_type_is_read_from_type_as_well_as_report_type(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    post(client, keys, [frontend("report_sent", "r-1", message_id="m-1", type="Spam"),
                        frontend("report_sent", "r-2", message_id="m-1", reportType="Fraud")])
    with container.uow() as uow:
        assert sorted(uow.session.scalars(select(Complaint.report_type))) == ["Fraud", "Spam"]


def test_a_name_given_only_as_nickname_becomes_the_display_name(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    named = frontend("name_set", "nick-1", created_at="2026-01-14T10:00:00Z")
    named["value"].pop("user_name")
    named["value"]["nickname"] = "Johnny"
    assert post(client, keys, named).json()["accepted"] == 1
    assert opened_profile(container, subject_id(container, "nick-1")) == ("Johnny", None)


def test_message_changed_replaces_the_text_and_is_audited_without_it(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    post(client, keys, sent("my phone is 555-0101", "2026-01-14T10:00:00Z"))
    post(client, keys, edit("call me", "2026-01-14T10:05:00Z"))
    assert stored_text(container, "m-1") == "call me"
    with container.uow() as uow:
        entries = list(uow.session.scalars(select(AuditEntry).where(AuditEntry.action == "message.edited")))
    assert len(entries) == 1
    assert entries[0].details == {"message_id": "m-1"}
    assert entries[0].subject == subject_hash(SECRET, PROJECT, AUTHOR)
    assert "call me" not in str(entries[0].details) and "555" not in str(entries[0].details)


def test_the_latest_edit_wins_whatever_the_delivery_order(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    post(client, keys, sent("v0", "2026-01-14T10:00:00Z"))
    post(client, keys, edit("v2", "2026-01-14T10:02:00Z"))
    post(client, keys, edit("v1", "2026-01-14T10:01:00Z"))  # older, arrives later
    assert stored_text(container, "m-1") == "v2"


def test_an_edit_that_arrives_before_its_message_keeps_the_edited_text(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    post(client, keys, edit("edited", "2026-01-14T10:05:00Z"))
    post(client, keys, sent("original", "2026-01-14T10:00:00Z"))
    assert stored_text(container, "m-1") == "edited"
    response = client.get("/v1/messages/m-1", headers={"Authorization": f"Bearer {keys['api_key']}"})
    assert response.json()["room_id"] == "r-1" and response.json()["state"] == "visible"


def test_only_the_author_edits_a_message(client: TestClient[Any], keys: dict[str, str],
                                         container: Container) -> None:
    post(client, keys, sent("mine", "2026-01-14T10:00:00Z"))
    post(client, keys, edit("hijacked", "2026-01-14T10:05:00Z", user="someone-else"))
    assert stored_text(container, "m-1") == "mine"


def test_the_old_text_of_an_edited_message_leaves_the_sqlite_file(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    if container.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL keeps the old row version until VACUUM (README, erasure guarantees)")
    post(client, keys, sent("canary-old-text-7f3a", "2026-01-14T10:00:00Z"))
    with container.uow() as uow:  # stored sealed: the old text's bytes on disk are its ciphertext
        old = uow.session.scalar(select(Message.text).where(Message.message_id == "m-1"))
    assert old is not None and old.startswith("v1.")
    post(client, keys, edit("new text", "2026-01-14T10:05:00Z"))
    container.keys.compaction.compact()  # the WAL is checkpointed into the main file, as the jobs do
    database = Path(str(container.engine.url.database))
    for path in (database, database.with_name(database.name + "-wal")):
        if path.exists():
            assert old.encode() not in path.read_bytes(), path
            assert b"canary-old-text-7f3a" not in path.read_bytes(), path
