"""Who may call Lethe: partners' projects (their keys and webhook secrets), compliance officers and
their console sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.domain.statuses import ProjectStatus
from app.domain.webhooks import DEFAULT_METHODS
from app.models.base import Base


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
