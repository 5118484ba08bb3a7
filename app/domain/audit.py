"""Canonical encoding and hash chaining of audit entries (pure).

entry.hash = SHA-256(prev_hash + canonical JSON of the entry's fields without `hash`).
The first entry's prev_hash is GENESIS. Editing, deleting or reordering any entry breaks the
chain at that entry, and `first_break` names its `seq`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry before it is chained: what happened, by whom, to which (hashed) subject."""

    actor: str
    action: str
    project: str | None = None
    subject: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChainedEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    project: str | None
    subject: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


def canonical(seq: int, at: datetime, record: AuditRecord, prev_hash: str) -> bytes:
    body = {
        "seq": seq,
        "at": at.isoformat(),
        "actor": record.actor,
        "action": record.action,
        "project": record.project,
        "subject": record.subject,
        "details": record.details,
        "prev_hash": prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(seq: int, at: datetime, record: AuditRecord, prev_hash: str) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(seq, at, record, prev_hash)).hexdigest()


def chain(head_seq: int, head_hash: str, at: datetime, records: Iterable[AuditRecord]) -> list[ChainedEntry]:
    """Append `records` after the head (seq, hash) of the chain."""
    entries: list[ChainedEntry] = []
    seq, prev = head_seq, head_hash
    for record in records:
        seq += 1
        digest = entry_hash(seq, at, record, prev)
        entries.append(
            ChainedEntry(seq, at, record.actor, record.action, record.project, record.subject,
                         record.details, prev, digest)
        )
        prev = digest
    return entries


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None


def verify(entries: Iterable[ChainedEntry]) -> Verification:
    """Walk the chain in `seq` order; the first entry whose link or hash is wrong is bad.

    A deleted entry shows as a gap in `seq` (or a prev_hash that no longer matches), a
    reordered one as a prev_hash mismatch, an edited one as a hash mismatch.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    for entry in entries:
        record = AuditRecord(entry.actor, entry.action, entry.project, entry.subject, entry.details)
        if (
            entry.seq != expected_seq
            or entry.prev_hash != prev
            or entry.hash != entry_hash(entry.seq, entry.at, record, entry.prev_hash)
        ):
            return Verification(False, count, prev, entry.seq)
        prev, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    return Verification(True, count, prev, None)


def subject_hash(key: bytes, project: str, user_id: str) -> str:
    """Keyed hash of a platform user id: the only form in which a user appears in the log."""
    return hmac.new(key, f"{project}\x00{user_id}".encode(), hashlib.sha256).hexdigest()
