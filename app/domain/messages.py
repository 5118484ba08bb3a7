"""A chat message's state, derived from what happened to it (pure)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class MessageState(StrEnum):
    VISIBLE = "visible"  # shown in chat
    DELETED = "deleted"  # hidden from chat, still in the admin feed
    REMOVED = "removed"  # left the feed after the policy's feed days; text erased
    REPORTED = "reported"  # deleted, kept in the report list while complaints are open
    ARCHIVED = "archived"  # deleted, its complaints processed
    ANONYMISED = "anonymised"  # its author was erased: shown as from a deleted user


def message_state(*, deleted_at: datetime | None, removed_at: datetime | None, archived_at: datetime | None,
                  open_complaints: int, author_erased: bool) -> MessageState:
    if deleted_at is None:
        return MessageState.ANONYMISED if author_erased else MessageState.VISIBLE
    if open_complaints > 0:  # a complaint on an archived message reopens it, until processed again
        return MessageState.REPORTED
    if archived_at is not None:
        return MessageState.ARCHIVED
    if removed_at is not None:
        return MessageState.REMOVED
    return MessageState.DELETED
