"""Canonical encoding, keyed hash chaining and signed checkpoints of audit entries (pure).

entry.hash = HMAC-SHA256(chain key, prev_hash + canonical JSON of the entry's fields without
`hash`); the chain key derives from LETHE_SECRET_KEY, so someone who can write the database
but does not hold the secret cannot recompute the chain after editing an entry. Entries
written before the chain was keyed (seq < `keyed_from`) keep their plain SHA-256 hashes.
The first entry's prev_hash is GENESIS. Editing, deleting or reordering any entry breaks the
chain at that entry, and `verify` names its `seq`.

A checkpoint is the head (seq, hash, at) signed with HMAC under a second derived key and kept
outside the database. A chain that no longer holds a checkpoint's hash at its seq has been
truncated or rewritten, even if it is consistent in itself.
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


CHAIN_LABEL = b"lethe audit chain v1"
CHECKPOINT_LABEL = b"lethe audit checkpoint v1"


def entry_hash(seq: int, at: datetime, record: AuditRecord, prev_hash: str, key: bytes | None) -> str:
    """The entry's keyed hash; `key=None` only for entries written before the chain was keyed."""
    data = prev_hash.encode() + canonical(seq, at, record, prev_hash)
    return hmac.new(key, data, hashlib.sha256).hexdigest() if key is not None else hashlib.sha256(data).hexdigest()


def chain(head_seq: int, head_hash: str, at: datetime, records: Iterable[AuditRecord],
          key: bytes) -> list[ChainedEntry]:
    """Append `records` after the head (seq, hash) of the chain."""
    entries: list[ChainedEntry] = []
    seq, prev = head_seq, head_hash
    for record in records:
        seq += 1
        digest = entry_hash(seq, at, record, prev, key)
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
    problem: str | None = None  # what is wrong, in a sentence (None when ok)


def verify(entries: Iterable[ChainedEntry], key: bytes, keyed_from: int = 1) -> Verification:
    """Walk the chain in `seq` order; the first entry whose link or hash is wrong is bad.

    A deleted entry shows as a gap in `seq` (or a prev_hash that no longer matches), a
    reordered one as a prev_hash mismatch, an edited one as a hash mismatch.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    for entry in entries:
        record = AuditRecord(entry.actor, entry.action, entry.project, entry.subject, entry.details)
        entry_key = key if entry.seq >= keyed_from else None
        if (
            entry.seq != expected_seq
            or entry.prev_hash != prev
            or not hmac.compare_digest(entry.hash, entry_hash(entry.seq, entry.at, record, entry.prev_hash, entry_key))
        ):
            return Verification(False, count, prev, entry.seq,
                                f"entry {entry.seq}: its link or keyed hash does not match (edited, moved or deleted)")
        prev, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    return Verification(True, count, prev, None)


def subject_hash(key: bytes, project: str, user_id: str) -> str:
    """Keyed hash of a platform user id: the only form in which a user appears in the log."""
    return hmac.new(key, f"{project}\x00{user_id}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed head of the chain, to keep outside the database."""

    seq: int
    hash: str
    at: str  # ISO 8601, as signed
    signature: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "signature": self.signature}


def _signature(key: bytes, seq: int, head_hash: str, at: str) -> str:
    return hmac.new(key, f"{seq}.{head_hash}.{at}".encode(), hashlib.sha256).hexdigest()


def sign_checkpoint(key: bytes, seq: int, head_hash: str, at: datetime) -> Checkpoint:
    stamp = at.isoformat()
    return Checkpoint(seq, head_hash, stamp, _signature(key, seq, head_hash, stamp))


def parse_checkpoint(raw: Any) -> Checkpoint:
    """A checkpoint as read back from a file (ValueError naming what is wrong)."""
    if not isinstance(raw, Mapping) or set(raw) != {"seq", "hash", "at", "signature"}:
        raise ValueError('a checkpoint is a JSON object {"seq", "hash", "at", "signature"}')
    if not isinstance(raw["seq"], int) or not all(isinstance(raw[k], str) for k in ("hash", "at", "signature")):
        raise ValueError("a checkpoint's seq is an integer and its hash, at and signature are strings")
    return Checkpoint(raw["seq"], raw["hash"], raw["at"], raw["signature"])


def checkpoint_problem(key: bytes, checkpoint: Checkpoint, hash_at_seq: str | None) -> str | None:
    """Why the chain does not hold this checkpoint, if it does not. `hash_at_seq`: the chain's
    hash at the checkpoint's seq (None when the chain is shorter)."""
    if not hmac.compare_digest(checkpoint.signature, _signature(key, checkpoint.seq, checkpoint.hash, checkpoint.at)):
        return f"checkpoint at seq {checkpoint.seq}: the signature is not Lethe's (forged or altered checkpoint)"
    if checkpoint.seq == 0:
        return None
    if hash_at_seq is None:
        return f"checkpoint at seq {checkpoint.seq}: the chain no longer reaches it (truncated)"
    if not hmac.compare_digest(hash_at_seq, checkpoint.hash):
        return f"checkpoint at seq {checkpoint.seq}: the chain holds another hash there (rewritten)"
    return None
