"""The audit log: written with the change it records, tamper-evident, exportable."""

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import pytest
from sqlalchemy import Connection, Engine, text

from app.bootstrap import Container
from app.domain.audit import AuditRecord, subject_hash
from tests.conftest import SECRET
from tests.integration.test_deletion_requests import request


def test_entry_commits_with_its_change_and_not_without_it(container: Container, project: dict[str, str]) -> None:
    before = container.audit.verify().entries
    with container.uow() as uow:
        uow.audit(AuditRecord("operator:test", "thing.changed", "acme"))
        # leaving without commit: the change and its entry are both gone
    assert container.audit.verify().entries == before
    request(container, "u-1")
    after = container.audit.verify()
    assert after.ok and after.entries == before + 1


def test_filter_by_user_id_hashes_it(container: Container, project: dict[str, str]) -> None:
    request(container, "u-1")
    request(container, "u-2")
    page = container.audit.page(["acme"], user_id="u-1")
    assert [e.action for e in page.items] == ["deletion_request.created"]
    assert page.items[0].subject == subject_hash(SECRET, "acme", "u-1")
    assert b"u-1" not in msgspec.json.encode(page)


def test_filters_and_pagination(container: Container, project: dict[str, str]) -> None:
    for i in range(5):
        request(container, f"u-{i}")
    seqs, cursor = [], None
    while True:
        page = container.audit.page(["acme"], action="deletion_request.created", limit=2, cursor=cursor)
        seqs += [e.seq for e in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seqs) == 5 and seqs == sorted(seqs)
    assert container.audit.page(["other"]).items == []


@contextmanager
def tampering(engine: Engine) -> Iterator[Connection]:
    """A database writer with every right, the owner's included: on PostgreSQL it first turns
    off the trigger that keeps the log append-only (what the application's role cannot do)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        yield conn
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))


@pytest.mark.parametrize(("tamper", "bad_seq"), [
    ("UPDATE audit_log SET details = '{\"request_id\": \"forged\"}' WHERE seq = 3", 3),
    ("UPDATE audit_log SET actor = 'operator:someone-else' WHERE seq = 2", 2),
    ("DELETE FROM audit_log WHERE seq = 2", 3),
])
def test_verify_names_the_first_bad_entry(container: Container, project: dict[str, str], tamper: str,
                                          bad_seq: int) -> None:
    for i in range(3):
        request(container, f"u-{i}")
    assert container.audit.verify().ok
    with tampering(container.engine) as conn:
        conn.execute(text(tamper))
    result = container.audit.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq


def test_reordering_two_entries_is_found(container: Container, project: dict[str, str]) -> None:
    for i in range(3):
        request(container, f"u-{i}")
    with tampering(container.engine) as conn:  # swap entries 2 and 3 (through a free seq)
        conn.execute(text("UPDATE audit_log SET seq = 1000 WHERE seq = 2"))
        conn.execute(text("UPDATE audit_log SET seq = 2 WHERE seq = 3"))
        conn.execute(text("UPDATE audit_log SET seq = 3 WHERE seq = 1000"))
    assert container.audit.verify().first_bad_seq == 2


def test_truncated_tail_is_found(container: Container, project: dict[str, str]) -> None:
    for i in range(3):
        request(container, f"u-{i}")
    with tampering(container.engine) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    result = container.audit.verify()
    assert not result.ok and result.first_bad_seq == 4


def test_export_jsonl_and_csv(container: Container, project: dict[str, str]) -> None:
    request(container, "u-1")
    lines = list(container.audit.export(["acme"], "jsonl"))
    entries = [json.loads(line) for line in lines]
    assert [e["action"] for e in entries] == ["project.created", "deletion_request.created"]
    assert set(entries[0]) == {"seq", "at", "actor", "action", "project", "subject", "details", "hash", "prev_hash"}
    rows = list(csv.DictReader(io.StringIO("".join(container.audit.export(["acme"], "csv")))))
    assert [r["seq"] for r in rows] == [str(e["seq"]) for e in entries]
    assert json.loads(rows[1]["details"])["mode"] == "grace"
    assert list(container.audit.export(["other"], "jsonl")) == []
