"""Compliance officers' view of the audit log: query, export, verify."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from app.domain.audit import Verification, subject_hash, verify
from app.ports import UnitOfWorkFactory
from app.stores.sql.models import AuditEntry
from app.stores.sql.repositories import decode_cursor, encode_cursor

EXPORT_FIELDS = ["seq", "at", "actor", "action", "project", "subject", "details", "hash", "prev_hash"]


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "at": entry.at.isoformat(), "actor": entry.actor, "action": entry.action,
            "project": entry.project, "subject": entry.subject, "details": entry.details,
            "hash": entry.hash, "prev_hash": entry.prev_hash}


class AuditService:
    def __init__(self, uow: UnitOfWorkFactory, secret_key: bytes) -> None:
        self._uow = uow
        self._key = secret_key

    def page(self, projects: Sequence[str], *, user_id: str | None = None, action: str | None = None,
             since: datetime | None = None, until: datetime | None = None, limit: int = 50,
             cursor: str | None = None) -> dict[str, Any]:
        after = int(decode_cursor(cursor, 1)[0]) if cursor else 0
        # The log holds keyed hashes only: a user id filter is hashed per project the same way.
        subjects = [subject_hash(self._key, p, user_id) for p in projects] if user_id is not None else None
        with self._uow() as uow:
            rows = uow.audit_log.page(projects, subjects=subjects, action=action, since=since, until=until,
                                      limit=limit + 1, after_seq=after)
        items = [entry_dict(r) for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
        return {"items": items, "next_cursor": next_cursor}

    def export(self, projects: Sequence[str] | None, fmt: str, *, since: datetime | None = None,
               until: datetime | None = None, batch: int = 2000) -> Iterator[str]:
        """Stream entries as JSON lines or CSV (with a header), oldest first."""
        if fmt == "csv":
            yield _csv_row(EXPORT_FIELDS)
        after = 0
        while True:
            with self._uow() as uow:
                rows = uow.audit_log.page(projects, since=since, until=until, limit=batch, after_seq=after)
                items = [entry_dict(r) for r in rows]
            for item in items:
                if fmt == "csv":
                    yield _csv_row([json.dumps(item[f], sort_keys=True) if f == "details" else item[f]
                                    for f in EXPORT_FIELDS])
                else:
                    yield json.dumps(item, sort_keys=True) + "\n"
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def verify(self) -> Verification:
        """Walk the whole chain, then check that its last entry is the recorded head.

        The head check catches entries deleted from the end, which leave no gap to find.
        """
        with self._uow() as uow:
            result = verify(uow.audit_log.walk())
            head_seq, head_hash = uow.audit_log.head()
        if result.ok and (result.entries != head_seq or result.head != head_hash):
            return Verification(False, result.entries, result.head, result.entries + 1)
        return result


def _csv_row(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()
