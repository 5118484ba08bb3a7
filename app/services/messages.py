"""Chat messages as the partner sees them (CONTRACT §3 "Messages")."""

from __future__ import annotations

from typing import Any

from app.domain.messages import message_state
from app.ports import UnitOfWorkFactory
from app.services.errors import NotFound


class MessageService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    def get(self, project_id: str, message_id: str) -> dict[str, Any]:
        with self._uow() as uow:
            message = uow.messages.get(project_id, message_id)
            if message is None:
                raise NotFound(f"message {message_id} not found")
            author = uow.subjects.get(message.subject_id) if message.subject_id else None
            open_complaints = uow.complaints.open_count(project_id, message_id)
        state = message_state(deleted_at=message.deleted_at, removed_at=message.removed_at,
                              archived_at=message.archived_at, open_complaints=open_complaints,
                              author_erased=author is not None and author.status != "active")
        return {"message_id": message.message_id, "room_id": message.room_id, "state": state.value,
                "deleted_at": message.deleted_at.isoformat() if message.deleted_at else None,
                "open_complaints": open_complaints,
                "archived_at": message.archived_at.isoformat() if message.archived_at else None}
