"""Chat messages as the partner sees them (CONTRACT §3 "Messages")."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.domain.audit import AuditRecord
from app.domain.holds import Data
from app.domain.messages import message_state
from app.domain.statuses import SubjectStatus
from app.ports import UnitOfWorkFactory
from app.services.errors import NotFound
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.policies import PolicyBook
from app.services.summary import JobSummary
from app.services.views import MessageOut, iso


class MessageService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    def get(self, project_id: str, message_id: str) -> MessageOut:
        with self._uow() as uow:
            message = uow.messages.get(project_id, message_id)
            if message is None:
                raise NotFound(f"message {message_id} not found")
            author = uow.subjects.get(message.subject_id) if message.subject_id else None
            open_complaints = uow.complaints.open_count(project_id, message_id)
        state = message_state(deleted_at=message.deleted_at, removed_at=message.removed_at,
                              archived_at=message.archived_at, open_complaints=open_complaints,
                              author_erased=author is not None and author.status != SubjectStatus.ACTIVE)
        return MessageOut(message_id=message.message_id, room_id=message.room_id, state=state.value,
                          deleted_at=iso(message.deleted_at), open_complaints=open_complaints,
                          archived_at=iso(message.archived_at))


class MessageFeedService:
    """Job `message_feed`: a deleted message leaves the admin feed `message_feed_days` after its
    deletion (text erased) unless complaints are open; held messages are left as they are."""

    def __init__(self, uow: UnitOfWorkFactory, policies: PolicyBook, holds: HoldService,
                 identities: Identities) -> None:
        self._ids = identities
        self._uow = uow
        self._policies = policies
        self._holds = holds

    def run(self, now: datetime) -> JobSummary:
        summary = JobSummary("message_feed", now)
        with self._uow() as uow:
            projects = uow.projects.all_names()
            holds = self._holds.standing(uow, list(projects))
            for project_id, name in sorted(projects.items(), key=lambda p: p[1]):
                cutoff = now - timedelta(days=self._policies.for_project(name).message_feed_days)
                leaving = uow.messages.leaving_feed(project_id, cutoff)
                authors = self._ids.user_ids(uow, [author for _, author in leaving if author is not None])
                free, held = self._holds.split(name, ((message, Data.message(
                    name, authors.get(author.id) if author else None, message.room_id, message.message_id))
                    for message, author in leaving), holds)
                summary.held += len(held)
                removable = [message.id for message in free]
                uow.messages.remove(removable, now)
                summary.processed += len(removable)
                if removable:
                    uow.audit(AuditRecord("job:message_feed", "messages.removed_from_feed", name, None,
                                          {"messages": len(removable)}))
            summary.stores["sql.messages"] = summary.processed
            uow.commit()
        return summary

    def resolve(self, project_id: str, message_id: str, *, actor: str, now: datetime) -> int:
        """Process every open complaint on the message; a deleted, reported message is archived.
        Returns how many complaints were resolved."""
        with self._uow() as uow:
            message = uow.messages.get(project_id, message_id)
            if message is None:
                raise NotFound(f"message {message_id} not found")
            resolved = uow.complaints.resolve(project_id, message_id, now)
            if message.deleted_at is not None and resolved and message.archived_at is None:
                message.archived_at = now
            names = uow.projects.names([project_id])
            uow.audit(AuditRecord(actor, "message.complaints_resolved", names[project_id], None,
                                  {"message_id": message_id, "complaints": resolved,
                                   "archived": message.archived_at is not None}))
            uow.commit()
        return resolved
