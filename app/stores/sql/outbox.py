"""The ingest outbox's repository (`event_outbox`, see models.OutboxEntry). It never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from app.models import OutboxEntry
from app.ports import EventRow
from app.stores.sql.queries import rowcount

# an entry holds its rows exactly as they will be inserted into ClickHouse, as JSON
_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(list[EventRow])


class EventOutbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, project_id: str, created_at: datetime, rows: Sequence[EventRow]) -> None:
        self.session.execute(insert(OutboxEntry).values(project_id=project_id, created_at=created_at, count=len(rows),
                                                        rows=_ENCODE.encode(rows)))

    def depth(self) -> tuple[int, datetime | None]:
        """(events waiting, when the oldest entry was written)."""
        count, oldest = self.session.execute(
            select(func.coalesce(func.sum(OutboxEntry.count), 0), func.min(OutboxEntry.created_at))).one()
        return int(count), oldest

    def claimed(self) -> list[str]:
        """Blocks a drain claimed and did not finish (it died), oldest first."""
        rows = self.session.execute(select(OutboxEntry.block, func.min(OutboxEntry.seq))
                                    .where(OutboxEntry.block.is_not(None)).group_by(OutboxEntry.block)
                                    .order_by(func.min(OutboxEntry.seq)))
        return [str(block) for block, _ in rows]

    def next_unclaimed(self, max_events: int) -> list[int]:
        """The oldest unclaimed entries, in order, up to `max_events` events (at least one entry)."""
        seqs: list[int] = []
        total = 0
        for seq, count in self.session.execute(select(OutboxEntry.seq, OutboxEntry.count)
                                               .where(OutboxEntry.block.is_(None)).order_by(OutboxEntry.seq)
                                               .limit(1_000)):
            if seqs and total + count > max_events:
                break
            seqs.append(int(seq))
            total += int(count)
        return seqs

    def claim(self, seqs: Sequence[int], block: str) -> bool:
        """Mark these entries as one block; False when another drain claimed any of them first."""
        done = self.session.execute(update(OutboxEntry).where(OutboxEntry.seq.in_(seqs), OutboxEntry.block.is_(None))
                                    .values(block=block).execution_options(synchronize_session=False))
        return rowcount(done) == len(seqs)

    def block(self, block: str) -> list[EventRow]:
        """A block's entries' rows, in the order they were written."""
        return [row for data in self.session.scalars(select(OutboxEntry.rows).where(OutboxEntry.block == block)
                                                     .order_by(OutboxEntry.seq)) for row in _DECODE.decode(data)]

    def remove(self, block: str) -> None:
        self.session.execute(delete(OutboxEntry).where(OutboxEntry.block == block))
