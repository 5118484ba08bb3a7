"""The tamper-evident audit log, its head, and the record of job runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.models.base import Base


class AuditEntry(Base):
    """Append-only, hash-chained. Never updated or deleted by the application."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_project_seq", "project", "seq"),
        Index("ix_audit_log_subject", "subject"),
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                      autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    project: Mapped[str | None] = mapped_column(String(100))
    subject: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))



class AuditHead(Base):
    """One row: the chain's last (seq, hash). Locking it serialises appends to the chain."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    # the first seq hashed with the chain key; entries before it (written by older versions)
    # keep plain SHA-256 hashes. Set once, by the migration that keyed the chain.
    keyed_from: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")



class JobRun(Base):
    """One run of a scheduled job, for `lethe jobs list` (no personal data in the summary)."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_finished", "job", "finished_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job: Mapped[str] = mapped_column(String(50))
    as_of: Mapped[datetime]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    ok: Mapped[bool]
    summary: Mapped[dict[str, Any]]
