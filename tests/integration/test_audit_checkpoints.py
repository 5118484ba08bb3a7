"""An audit chain that survives a database writer (issue 11 §5): keyed hashes, and signed
checkpoints kept outside the SQL store that catch truncation, head rewrites, recomputed
chains and a wiped log. On PostgreSQL the log is append-only for the application."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.bootstrap import Container
from app.domain.audit import AuditRecord, entry_hash
from tests.integration.test_audit_log import tampering
from tests.integration.test_deletion_requests import request


def grow(container: Container, n: int) -> None:
    for i in range(n):
        request(container, f"u-{i}-{container.audit.verify().entries}")


def test_checkpoints_are_signed_kept_outside_and_verified(container: Container, project: dict[str, str]) -> None:
    grow(container, 2)
    checkpoint = container.audit.checkpoint(container.now())
    assert set(checkpoint) == {"seq", "hash", "at", "signature"} and checkpoint["seq"] == 3
    path = container.settings.audit_checkpoints
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(line) for line in path.read_text().splitlines()] == [checkpoint]
    grow(container, 1)
    assert container.audit.verify().ok
    assert [msgspec.to_builtins(c) for c in container.audit.checkpoints(10, None).items] == [checkpoint]


@pytest.mark.parametrize("attack", ["wipe everything", "truncate the tail and fix the head",
                                    "rewrite with plain SHA-256"])
def test_a_database_writer_cannot_hide_a_change_from_a_checkpoint(container: Container, project: dict[str, str],
                                                                  attack: str) -> None:
    grow(container, 3)
    container.audit.checkpoint(container.now())  # seq 4
    with container.uow() as uow:
        entries = list(uow.audit_log.walk())
    with tampering(container.engine) as conn:
        if attack == "wipe everything":
            conn.execute(text("DELETE FROM audit_log"))
            conn.execute(text("UPDATE audit_head SET seq = 0, hash = :h"), {"h": "0" * 64})
        elif attack == "truncate the tail and fix the head":
            kept = conn.execute(text("SELECT hash FROM audit_log WHERE seq = 2")).scalar_one()
            conn.execute(text("DELETE FROM audit_log WHERE seq > 2"))
            conn.execute(text("UPDATE audit_head SET seq = 2, hash = :h"), {"h": kept})
        else:  # edit entry 2, then recompute every hash with the old unkeyed scheme, head and keyed_from too
            prev = "0" * 64
            for entry in entries:
                actor = "operator:someone-else" if entry.seq == 2 else entry.actor
                record = AuditRecord(actor, entry.action, entry.project, entry.subject, entry.details)
                digest = entry_hash(entry.seq, entry.at, record, prev, None)
                conn.execute(text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                             {"a": actor, "p": prev, "h": digest, "s": entry.seq})
                prev = digest
            conn.execute(text("UPDATE audit_head SET hash = :h, keyed_from = 1000000"), {"h": prev})
    result = container.audit.verify()
    assert not result.ok, attack
    assert result.problem and ("truncated" in result.problem or "rewritten" in result.problem), result.problem


def test_a_forged_checkpoint_file_is_refused(container: Container, project: dict[str, str]) -> None:
    grow(container, 1)
    real = container.audit.checkpoint(container.now())
    forged = {**real, "hash": hashlib.sha256(b"forged").hexdigest()}
    result = container.audit.verify([forged])
    assert not result.ok and result.problem and "forged" in result.problem
    assert container.audit.verify([real]).ok


def test_checkpoints_come_every_thousand_entries_or_hour(container: Container, project: dict[str, str]) -> None:
    assert container.audit.checkpoint_if_due(container.now()) is not None  # the first one
    assert container.audit.checkpoint_if_due(container.now()) is None  # nothing new
    grow(container, 1)
    assert container.audit.checkpoint_if_due(container.now()) is None  # one entry, a moment later
    assert container.audit.checkpoint_if_due(container.now() + timedelta(hours=1)) is not None


def test_the_application_cannot_update_or_delete_audit_rows_on_postgresql(container: Container,
                                                                          project: dict[str, str]) -> None:
    if container.engine.dialect.name != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's (SQLite has no roles)")
    for statement in ("UPDATE audit_log SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(DBAPIError, match="append-only"), container.engine.begin() as conn:
            conn.execute(text(statement))
    assert container.audit.verify().ok
