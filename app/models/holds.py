"""Regulatory holds, and whose data a hold keeps."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.models.base import Base


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
