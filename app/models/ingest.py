"""The events webhook's own tables: the ingest outbox, the receipts that deduplicate deliveries,
and the rejected bodies (dead letters)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.models.base import Base


class OutboxEntry(Base):
    """One webhook transaction's analytics events, on their way to ClickHouse (the ingest
    outbox). Written in the webhook's own transaction, so a 2xx never waits for ClickHouse;
    `lethe worker` (or `lethe serve`'s scheduler) moves entries into ClickHouse in blocks and
    deletes them. `rows` holds the events exactly as ClickHouse will: pseudonymous subject ids
    and personal values already sealed under their subjects' keys. `block` is set when a drain
    claims the entry: a drain that dies is redone with the same ClickHouse deduplication token."""

    __tablename__ = "event_outbox"
    __table_args__ = (Index("ix_event_outbox_block", "block"),)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(36))  # no foreign key: rows only wait here for the drain
    created_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer)
    rows: Mapped[bytes] = mapped_column(LargeBinary)
    block: Mapped[str | None] = mapped_column(String(32))



class EventReceipt(Base):
    """The dedup key of every stored event: a repeated delivery has one effect."""

    __tablename__ = "event_receipts"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[datetime]



class DeadLetter(Base):
    """A webhook body or envelope that could not be stored, kept with the reason."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_project_received", "project_id", "received_at", "id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    received_at: Mapped[datetime]
    batch_index: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
