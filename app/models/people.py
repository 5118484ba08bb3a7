"""The platform's users and their operational data: `subjects` is the only table that links a
platform user id (sealed) to Lethe's subject id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.domain.statuses import SubjectStatus
from app.models.base import Base


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



class Suppression(Base):
    """A user erased for good stays suppressed for a while: their late events (an open widget,
    a platform retry) are dropped, so nothing starts to accumulate again. Only a keyed hash of
    (project, user id) is kept, never the id."""

    __tablename__ = "suppressions"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    until: Mapped[datetime]
