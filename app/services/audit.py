"""Compliance officers' view of the audit log: query, export, verify."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog

from app import observability
from app.domain.audit import (
    ChainedEntry,
    Checkpoint,
    Verification,
    checkpoint_problem,
    parse_checkpoint,
    sign_checkpoint,
    subject_hash,
    verify,
)
from app.models import AuditEntry
from app.paging import decode_seq_cursor, encode_cursor
from app.ports import CheckpointStore, UnitOfWork, UnitOfWorkFactory
from app.services.views import AuditEntryOut, AuditPage, CheckpointOut, CheckpointPage

log = structlog.get_logger(__name__)
EXPORT_FIELDS = ["seq", "at", "actor", "action", "project", "subject", "details", "hash", "prev_hash"]


def entry_view(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(seq=entry.seq, at=entry.at.isoformat(), actor=entry.actor, action=entry.action,
                         project=entry.project, subject=entry.subject, details=entry.details,
                         hash=entry.hash, prev_hash=entry.prev_hash)


CHECKPOINT_EVERY_ENTRIES = 1000
CHECKPOINT_EVERY = timedelta(hours=1)


class AuditService:
    def __init__(self, uow: UnitOfWorkFactory, secret_key: bytes, keys: tuple[bytes, bytes],
                 checkpoints: CheckpointStore) -> None:
        self._uow = uow
        self._key = secret_key
        self._chain_key, self._checkpoint_key = keys
        self._checkpoints = checkpoints

    def page(self, projects: Sequence[str], *, user_id: str | None = None, action: str | None = None,
             since: datetime | None = None, until: datetime | None = None, limit: int = 50,
             cursor: str | None = None) -> AuditPage:
        after = decode_seq_cursor(cursor) if cursor else 0
        with self._uow() as uow:
            rows = uow.audit_log.page(projects, subjects=self._subjects(uow, projects, user_id), action=action,
                                      since=since, until=until, limit=limit + 1, after_seq=after)
        items = [entry_view(r) for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
        return AuditPage(items, next_cursor)

    def _subjects(self, uow: UnitOfWork, projects: Sequence[str] | None, user_id: str | None) -> list[str] | None:
        """The log holds keyed hashes only: a user id filter is hashed per project the same way
        (`projects=None`, an operator's export, means every project)."""
        if user_id is None:
            return None
        names = projects if projects is not None else sorted(uow.projects.all_names().values())
        return [subject_hash(self._key, p, user_id) for p in names]

    def export(self, projects: Sequence[str] | None, fmt: str, *, user_id: str | None = None,
               action: str | None = None, since: datetime | None = None, until: datetime | None = None,
               batch: int = 2000) -> Iterator[str]:
        """Stream entries as JSON lines or CSV (with a header), oldest first, filtered as `page`."""
        if fmt == "csv":
            yield _csv_row(EXPORT_FIELDS)
        after = 0
        while True:
            with self._uow() as uow:
                rows = uow.audit_log.page(projects, subjects=self._subjects(uow, projects, user_id), action=action,
                                          since=since, until=until, limit=batch, after_seq=after)
                items = [msgspec.to_builtins(entry_view(r)) for r in rows]
            for item in items:
                if fmt == "csv":
                    yield _csv_row([json.dumps(item[f], sort_keys=True) if f == "details" else item[f]
                                    for f in EXPORT_FIELDS])
                else:
                    yield json.dumps(item, sort_keys=True) + "\n"
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def verify(self, checkpoints: Sequence[Any] | None = None) -> Verification:
        """Walk the whole chain (keyed hashes), check that its last entry is the recorded head,
        then that it still holds every checkpoint: those kept in the checkpoint file, or the
        ones given (`lethe audit verify --checkpoint FILE`). Every verification (the job, the
        API, the console, the CLI) sets this process's /metrics chain state.

        The head check catches entries deleted from the end, which leave no gap to find; the
        checkpoints catch what a database writer can do to the chain and the head together
        (truncate, rewrite, wipe), since they are signed and kept elsewhere.
        """
        result = self._verify(checkpoints)
        observability.audit_verified(result.ok, result.entries)
        return result

    def _verify(self, checkpoints: Sequence[Any] | None) -> Verification:
        given = list(self._checkpoints.read() if checkpoints is None else checkpoints)
        wanted = {raw.get("seq") for raw in given if isinstance(raw, dict)}
        hashes: dict[int, str] = {}  # the chain's hash at each checkpoint's seq, noted during the one walk

        def noting(entries: Iterator[ChainedEntry]) -> Iterator[ChainedEntry]:
            for entry in entries:
                if entry.seq in wanted:
                    hashes[entry.seq] = entry.hash
                yield entry

        with self._uow() as uow:
            result = verify(noting(uow.audit_log.walk()), self._chain_key, uow.audit_log.keyed_from())
            head_seq, head_hash = uow.audit_log.head()
        if result.ok and (result.entries != head_seq or result.head != head_hash):
            return Verification(False, result.entries, result.head, result.entries + 1,
                                f"the chain ends at entry {result.entries} but its head says {head_seq}: "
                                "entries were deleted from the end, or the head was rewritten")
        if not result.ok:
            return result
        for raw in given:
            try:
                checkpoint = parse_checkpoint(raw)
            except ValueError as exc:
                return replace(result, ok=False, problem=str(exc))
            problem = checkpoint_problem(self._checkpoint_key, checkpoint, hashes.get(checkpoint.seq))
            if problem:
                return replace(result, ok=False, first_bad_seq=min(checkpoint.seq, result.entries + 1),
                               problem=problem)
        return result

    def checkpoint(self, now: datetime) -> dict[str, Any]:
        """Sign the head and keep it outside the database: the checkpoint file and the log."""
        with self._uow() as uow:
            seq, head_hash = uow.audit_log.head()
        checkpoint = sign_checkpoint(self._checkpoint_key, seq, head_hash, now).as_dict()
        self._checkpoints.append(checkpoint)
        log.info("audit.checkpoint", **checkpoint)
        return checkpoint

    def checkpoint_if_due(self, now: datetime) -> dict[str, Any] | None:
        """A checkpoint every CHECKPOINT_EVERY_ENTRIES entries or every hour, whichever first
        (none while the chain has not grown)."""
        kept = self._kept()
        with self._uow() as uow:
            seq, _ = uow.audit_log.head()
        if not kept:
            return self.checkpoint(now) if seq else None
        _, last = kept[-1]
        grown = seq - last.seq
        if grown > 0 and (grown >= CHECKPOINT_EVERY_ENTRIES
                          or now - datetime.fromisoformat(last.at) >= CHECKPOINT_EVERY):
            return self.checkpoint(now)
        return None

    def checkpoints(self, limit: int, cursor: str | None) -> CheckpointPage:
        """The signed heads kept, newest first. The cursor is the place in the (append-only)
        checkpoint file of the last one seen: two checkpoints may sign the same seq."""
        before = decode_seq_cursor(cursor) if cursor else None
        kept = [(place, c) for place, c in reversed(self._kept()) if before is None or place < before]
        items = kept[:limit]
        return CheckpointPage([CheckpointOut(c.seq, c.hash, c.at, c.signature) for _, c in items],
                              encode_cursor(items[-1][0]) if len(kept) > limit else None)

    def _kept(self) -> list[tuple[int, Checkpoint]]:
        """(place in the file, checkpoint) of each readable one, oldest first."""
        kept = []
        for place, raw in enumerate(self._checkpoints.read()):
            try:
                kept.append((place, parse_checkpoint(raw)))
            except ValueError:
                log.warning("audit.checkpoint_unreadable")  # verify() reports it
        return kept


def _csv_row(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()
