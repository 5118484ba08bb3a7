"""Deletion requests, the batches that create them, the callbacks that report them, and the
idempotency records of the calls that asked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.domain.requests import OPEN_STATUSES
from app.models.base import Base

_OPEN = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES))


class DeletionRequest(Base):
    """A deletion request. `version` is SQLAlchemy's optimistic lock: every ORM update says
    `WHERE version = <the version read>`, so two writers can never both move one request on
    (the loser gets StaleDataError); transitions also lock the row (see DeletionRequests.lock)."""

    __tablename__ = "deletion_requests"
    __table_args__ = (
        # One open request per subject, enforced by the database even under concurrency.
        Index(
            "uq_deletion_requests_open_subject",
            "subject_id",
            unique=True,
            sqlite_where=text(f"status IN ({_OPEN})"),
            postgresql_where=text(f"status IN ({_OPEN})"),
        ),
        Index("ix_deletion_requests_project_requested", "project_id", "requested_at", "id"),
        Index("ix_deletion_requests_work", "status", "next_step", "grace_until"),
        Index("ix_deletion_requests_project_audit_subject", "project_id", "audit_subject"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"))
    # The audit log's keyed hash of the user id (domain.audit.subject_hash), kept like the log's
    # own: a partner still finds a purged user's request by user id, and nobody can read the id
    # from it. None on requests made before it existed (found through the subject until purged).
    audit_subject: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    next_step: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)  # partner free text, sealed (grace key), blanked on purge
    requested_at: Mapped[datetime]
    grace_until: Mapped[datetime]
    due_by: Mapped[datetime]
    anonymised_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    restored_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]  # a worker owns the request's current step until then
    due_extended_months: Mapped[int] = mapped_column(default=0, server_default="0")  # Art. 12(3), ≤ 2
    due_extension_reason: Mapped[str | None] = mapped_column(Text)  # the officer's, for the record
    leased_by: Mapped[str | None] = mapped_column(String(100))  # which run ("host:pid"), for operators
    detail: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __mapper_args__ = {"version_id_col": version}



class DeletionBatch(Base):
    """A partner's batch of deletion requests (one call, up to 10,000 users). Holds no user id:
    its items name the requests, whose subjects hold the link."""

    __tablename__ = "deletion_batches"
    __table_args__ = (Index("ix_deletion_batches_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[datetime]
    mode: Mapped[str] = mapped_column(String(20))
    listed: Mapped[int] = mapped_column(Integer)  # user ids in the call, invalid and repeated ones included
    invalid: Mapped[int] = mapped_column(Integer)



class DeletionBatchItem(Base):
    """One request a batch created or found open (what its progress counts)."""

    __tablename__ = "deletion_batch_items"
    batch_id: Mapped[str] = mapped_column(ForeignKey("deletion_batches.id"), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), primary_key=True)



class CallbackDelivery(Base):
    """One transition of a deletion request, to be POSTed to its project's callback URL (the
    outbox). Its id is the stable `webhook-id`. `payload` is the request as it was at the
    transition, without the user id; the user id is sealed under this delivery's own key, which
    goes with the delivery (delivered: the row is deleted; dead after 3 days: the key is)."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (Index("ix_callback_deliveries_due", "delivered_at", "dead_at", "next_attempt_at"),
                      Index("ix_callback_deliveries_project_created", "project_id", "created_at", "id"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"))
    status: Mapped[str] = mapped_column(String(20))  # the transition: in_grace, on_hold, completed...
    payload: Mapped[dict[str, Any]]
    user_id: Mapped[str | None] = mapped_column(Text)  # sealed under the delivery's key
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(String(200))  # e.g. "HTTP 503", "timeout"
    delivered_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]



class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)  # NULL while in flight
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
