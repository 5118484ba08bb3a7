"""The audit log's repository: appends chained entries under the head's row lock, and reads
them back (pages, the whole chain in order, a request's timeline). It never commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from app.domain.audit import GENESIS, AuditRecord, ChainedEntry, chain
from app.domain.policy import Handles
from app.models import AuditEntry, AuditHead
from app.stores.sql.queries import is_postgresql, json_rows


class AuditLog:
    handles: Handles = frozenset({("sql.audit_log", "subject", "kept_as_legal_record")})

    def __init__(self, session: Session) -> None:
        self.session = session

    def append(self, at: datetime, records: Sequence[AuditRecord], key: bytes) -> None:
        """Chain `records` after the head; the head row lock serialises concurrent writers."""
        head = self.session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
        if head is None:
            head = AuditHead(id=1, seq=0, hash=GENESIS, keyed_from=1)
            self.session.add(head)
        entries = chain(head.seq, head.hash, at, records, key)
        rows = [{"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "project": e.project,
                 "subject": e.subject, "details": dict(e.details), "prev_hash": e.prev_hash, "hash": e.hash}
                for e in entries]
        # A job or a batch may audit 10,000 requests at once. On PostgreSQL one INSERT ... SELECT
        # of the rows sent as one JSON document (`queries.json_rows`): an executemany, even
        # pipelined, runs a statement per row (0.3 s for 10,000). On SQLite one executemany
        # per 5,000 on the table. Not insert(AuditEntry): the ORM's bulk insert first walks
        # every row in Python, a fifth of the time of such a commit.
        table: Table = AuditEntry.__table__  # type: ignore[assignment]
        for i in range(0, len(rows), 5_000):
            chunk = rows[i:i + 5_000]
            if is_postgresql(self.session):
                given = json_rows({name: table.c[name].type for name in chunk[0]}, chunk)
                self.session.execute(table.insert().from_select(list(chunk[0]), select(*given.c)))
            else:
                self.session.execute(table.insert(), chunk)
        head.seq, head.hash = entries[-1].seq, entries[-1].hash

    def head(self) -> tuple[int, str]:
        head = self.session.get(AuditHead, 1)
        return (head.seq, head.hash) if head else (0, GENESIS)

    def keyed_from(self) -> int:
        head = self.session.get(AuditHead, 1)
        return head.keyed_from if head else 1

    def page(
        self,
        projects: Sequence[str] | None,
        *,
        subjects: Sequence[str] | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int,
        after_seq: int = 0,
    ) -> list[AuditEntry]:
        """Entries after `after_seq` in seq order; `projects=None` means every project (operators)."""
        query = select(AuditEntry).where(AuditEntry.seq > after_seq)
        if projects is not None:
            query = query.where(AuditEntry.project.in_(projects))
        if subjects is not None:
            query = query.where(AuditEntry.subject.in_(subjects))
        if action is not None:
            query = query.where(AuditEntry.action == action)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        if until is not None:
            query = query.where(AuditEntry.at < until)
        return list(self.session.scalars(query.order_by(AuditEntry.seq).limit(limit)))

    def of_requests(self, projects: Sequence[str], request_ids: Sequence[str]) -> dict[str, list[AuditEntry]]:
        """Each request's entries (its timeline), oldest first: those whose details name it."""
        if not request_ids:
            return {}
        request_id = AuditEntry.details["request_id"].as_string()
        rows = self.session.scalars(select(AuditEntry).where(AuditEntry.project.in_(projects),
                                                             request_id.in_(request_ids)).order_by(AuditEntry.seq))
        timelines: dict[str, list[AuditEntry]] = {}
        for row in rows:
            timelines.setdefault(str(row.details["request_id"]), []).append(row)
        return timelines

    def walk(self, batch: int = 5000) -> Iterator[ChainedEntry]:
        """Every entry in seq order, read in batches (the chain may be long)."""
        last = 0
        while True:
            rows = list(self.session.scalars(
                select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
            ))
            if not rows:
                return
            for row in rows:
                yield ChainedEntry(row.seq, row.at, row.actor, row.action, row.project, row.subject,
                                   row.details, row.prev_hash, row.hash)
            last = rows[-1].seq
