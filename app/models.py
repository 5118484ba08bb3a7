"""SQLAlchemy 2 typed models. `subjects` is the only table holding a platform user id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.domain.ids import new_id
from app.domain.requests import OPEN_STATUSES
from app.domain.statuses import ProjectStatus, SubjectStatus
from app.domain.webhooks import DEFAULT_METHODS

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Lethe stores UTC-aware datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    region: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=ProjectStatus.ACTIVE.value)  # ProjectStatus
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # Webhook auth (CONTRACT "Events webhook"). The Standard Webhooks signing secret is sealed
    # (domain.webhooks.seal_secret), never stored in plaintext; after a rotation the previous one
    # verifies until `..._previous_until`. The secret URL's secret is stored hashed, likewise.
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    webhook_secret_previous: Mapped[str | None] = mapped_column(Text)
    webhook_secret_previous_until: Mapped[datetime | None]
    webhook_url_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    webhook_url_previous_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    webhook_url_previous_until: Mapped[datetime | None]
    # which of signed, bearer, url the project accepts (comma-separated)
    webhook_auth: Mapped[str] = mapped_column(String(40), default=DEFAULT_METHODS,
                                              server_default=DEFAULT_METHODS)
    # Completion callbacks (app.services.callbacks): where to POST each transition, and the
    # Standard Webhooks secret that signs them (sealed like webhook_secret).
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_secret: Mapped[str | None] = mapped_column(Text)


class Officer(Base):
    __tablename__ = "officers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]  # `lethe officer revoke`: the token stops working (the record stays)


class ConsoleSession(Base):
    """A logged-in officer's console session, shared by every API process. The cookie holds a
    random id; only its SHA-256 is stored here. The session names the officer's token by its
    hash (as `officers.token_hash` does), so every page checks the token again: a revoked
    officer is out at once."""

    __tablename__ = "console_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(index=True)


class OfficerProject(Base):
    __tablename__ = "officer_projects"
    officer_id: Mapped[str] = mapped_column(ForeignKey("officers.id"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)


class Subject(Base):
    """The one link from a platform user id to Lethe's random subject id.

    The id is never stored in plaintext (app.services.identities): `user_key` is a keyed hash
    of (project, user id) to find the user by, `user_id` the id sealed under the subject's
    grace key. The purge sets both to NULL (and destroys the key): from then on nothing links
    the subject's remaining (anonymous) rows to a person.
    """

    __tablename__ = "subjects"
    __table_args__ = (Index("uq_subjects_project_user_key", "project_id", "user_key", unique=True),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    user_key: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(Text)  # sealed under the subject's grace key
    admin: Mapped[bool] = mapped_column(default=False, server_default=false())  # a platform admin, not a chat user
    status: Mapped[str] = mapped_column(String(20), default=SubjectStatus.ACTIVE.value)  # SubjectStatus
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    erased_at: Mapped[datetime | None]
    # Event times of the user's latest `delete_profile_confirmed` and `account_restored`:
    # webhooks arrive in any order, and of the two the later by event time wins.
    confirmed_event_at: Mapped[datetime | None]
    restored_event_at: Mapped[datetime | None]


class Profile(Base):
    """What a user shows of themself in chat (filled from profile events).

    Each field keeps the event time of the value it holds (last writer wins per field, by event
    time), so an older change delivered late never overwrites a newer one of the same field.
    """

    __tablename__ = "profiles"
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(Text)  # sealed under the subject's grace key
    display_name_at: Mapped[datetime | None]
    avatar_url: Mapped[str | None] = mapped_column(Text)  # sealed under the subject's grace key
    avatar_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


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


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)  # NULL while in flight
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


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


class Message(Base):
    """A chat message (from message_sent / admin_message_sent). `text` is personal: stored only as
    ciphertext under its author's `content` key (app.services.keys.CONTENT)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("uq_messages_project_message", "project_id", "message_id", unique=True),
        Index("ix_messages_subject", "subject_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    message_id: Mapped[str] = mapped_column(String(200))
    room_id: Mapped[str | None] = mapped_column(String(200))
    subject_id: Mapped[str | None] = mapped_column(ForeignKey("subjects.id"))
    text: Mapped[str | None] = mapped_column(Text)  # sealed under the author's content key
    sent_at: Mapped[datetime]
    # True for a tombstone: its deletion arrived before it was sent (webhooks come in any
    # order); the late `message_sent` fills it in and the message stays deleted.
    placeholder: Mapped[bool] = mapped_column(default=False, server_default=false())
    deleted_at: Mapped[datetime | None]
    removed_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    # event time of the `message_changed` that set `text`: the latest edit wins, in any order
    edited_at: Mapped[datetime | None]


class Complaint(Base):
    """A report on a message (report_sent with value.message_id)."""

    __tablename__ = "complaints"
    __table_args__ = (Index("ix_complaints_project_message", "project_id", "message_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    message_id: Mapped[str] = mapped_column(String(200))
    reporter_subject_id: Mapped[str | None] = mapped_column(ForeignKey("subjects.id"))
    report_type: Mapped[str | None] = mapped_column(String(100))
    opened_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class Login(Base):
    """A user_login IP, kept only when the project's policy says `store_ip = true`."""

    __tablename__ = "logins"
    __table_args__ = (Index("ix_logins_subject", "subject_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"))
    ip: Mapped[str] = mapped_column(Text)  # sealed under the subject's grace key
    at: Mapped[datetime]


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


class EventReceipt(Base):
    """The dedup key of every stored event: a repeated delivery has one effect."""

    __tablename__ = "event_receipts"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[datetime]


class HoldRecord(Base):
    """A regulatory hold. Released holds stay on record; nothing deletes a hold."""

    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_project_released", "project_id", "released_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    scope: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(200))
    placed_by: Mapped[str] = mapped_column(String(200))
    placed_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(200))
    released_at: Mapped[datetime | None]
    # Room and message holds take what they cover under their own data key (app.services.held):
    # done at; and when, after the hold ended, that data went back to its subjects' keys.
    sealed_at: Mapped[datetime | None]
    returned_at: Mapped[datetime | None]


class HeldAuthor(Base):
    """Whose data a room or message hold keeps: the platform user id of each subject whose
    covered messages or events the hold took, sealed under the hold's own key. A purge destroys
    the user's own link (`subjects.user_id`), not this one, so the regulator still reads who
    wrote what the hold keeps. The rows go, with the hold's key, once the hold has ended."""

    __tablename__ = "held_authors"
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)  # sealed under the hold's key


class KeyEncryptionKey(Base):
    """One version of the key-encryption key. The KEK itself is derived from LETHE_SECRET_KEY
    and never stored; `check` (an HMAC of a fixed label under it) tells a wrong secret apart
    from undecryptable data. Retired versions wrap no key once a rotation has finished."""

    __tablename__ = "kek_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]
    check: Mapped[str] = mapped_column(String(64))


class DataKey(Base):
    """A data key, wrapped under a KEK version: one per (owner, purpose). Personal values are
    stored only as ciphertext under such keys, so deleting this row erases them everywhere.

    One B-tree: the rows are the primary key's index (SQLite: WITHOUT ROWID), with no other
    index. An erasure deletes 10,000 keys scattered over the table, and each B-tree a row sits
    in is one more page rewritten per key: with a rowid, an id index and an (owner, purpose)
    index, the commit wrote twice the pages. `id` is not looked up; it is bound into the
    wrapping (app.domain.crypto.key_aad), so a wrapped key moved to another row does not open.

    The primary key is (purpose, owner), in that order: the keys of one purpose sit together.
    Anonymisation destroys analytics keys only, so its deletions fall on the analytics part of
    the table and share pages there, instead of being spread over the pages of every purpose
    (a subject's grace key beside its analytics key). Each statement names its purposes, so
    every lookup is a seek on the primary key."""

    __tablename__ = "data_keys"
    __table_args__ = (PrimaryKeyConstraint("purpose", "owner", name="pk_data_keys"), {"sqlite_with_rowid": False})
    # owner: a subject id, a hold id, "deadletters:<project>:<day>"...
    owner: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(20))  # analytics | grace | content | hold | ...
    id: Mapped[str] = mapped_column(String(36), default=new_id)
    kek_version: Mapped[int] = mapped_column(ForeignKey("kek_versions.version"))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class KeyGeneration(Base):
    """A counter per key purpose, moved on by every transaction that destroys keys of that
    purpose (in that transaction). A process keeps the keys it opened while the counter of
    their purpose has not moved: each transaction reads the counters once, so a key destroyed
    anywhere is unusable in every process from its next transaction on (app.services.keys)."""

    __tablename__ = "key_generations"
    purpose: Mapped[str] = mapped_column(String(20), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class Suppression(Base):
    """A user erased for good stays suppressed for a while: their late events (an open widget,
    a platform retry) are dropped, so nothing starts to accumulate again. Only a keyed hash of
    (project, user id) is kept, never the id."""

    __tablename__ = "suppressions"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    until: Mapped[datetime]
