"""SQLAlchemy 2 typed models, one module per part of the schema; every table is importable from
`app.models` (Alembic reads `Base.metadata` here, with every table registered). `subjects`
(app.models.people) is the only table holding a platform user id."""

from __future__ import annotations

from app.models.accounts import ConsoleSession, Officer, OfficerProject, Project
from app.models.audit import AuditEntry, AuditHead, JobRun
from app.models.base import Base, UTCDateTime
from app.models.holds import HeldAuthor, HoldRecord
from app.models.ingest import DeadLetter, EventReceipt, OutboxEntry
from app.models.keys import DataKey, KeyEncryptionKey, KeyGeneration
from app.models.people import Complaint, Login, Message, Profile, Subject, Suppression
from app.models.requests import CallbackDelivery, DeletionBatch, DeletionBatchItem, DeletionRequest, IdempotencyKey

__all__ = [
    "AuditEntry", "AuditHead", "Base", "CallbackDelivery", "Complaint", "ConsoleSession", "DataKey",
    "DeadLetter", "DeletionBatch", "DeletionBatchItem", "DeletionRequest", "EventReceipt",
    "HeldAuthor", "HoldRecord", "IdempotencyKey", "JobRun", "KeyEncryptionKey", "KeyGeneration",
    "Login", "Message", "Officer", "OfficerProject", "OutboxEntry", "Profile", "Project", "Subject",
    "Suppression", "UTCDateTime",
]
