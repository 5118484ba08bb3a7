"""What each event does to the operational data in SQL (CONTRACT "Lifecycle effects"):
messages, complaints, profiles, login IPs, and the user's own deletion and restore. Effects
resolve by event time, not by delivery order. The ingest service applies them, inside the
webhook call's transaction, before it queues the events for ClickHouse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord, subject_hash
from app.domain.crypto import Cipher
from app.domain.events import Event, report_type, supersedes
from app.domain.holds import Data
from app.domain.requests import Mode, Source
from app.domain.statuses import SubjectStatus
from app.models import Profile, Project, Subject
from app.ports import UnitOfWork
from app.services.deletion import DeletionService, NewRequest
from app.services.errors import Conflict
from app.services.holds import HoldService
from app.services.keys import CONTENT, GRACE, MESSAGE_TEXT_AAD, KeyService, unsealed
from app.services.policies import PolicyBook

log = structlog.get_logger(__name__)

MESSAGE_SENT = {"message_sent", "admin_message_sent"}
MESSAGE_TEXT = MESSAGE_SENT | {"message_changed"}  # the events whose text goes to `messages`
MESSAGE_DELETED = {"message_deleted", "admin_message_deleted"}
PROFILE_NAME = {"name_set", "name_changed"}
PROFILE_AVATAR = {"avatar_set", "avatar_changed"}


class EventEffects:
    def __init__(self, policies: PolicyBook, keys: KeyService, deletions: DeletionService, secret_key: bytes,
                 holds: HoldService) -> None:
        self._holds = holds
        self._policies = policies
        self._keys = keys
        self._deletions = deletions
        self._secret = secret_key

    def messages(self, uow: UnitOfWork, events: Sequence[Event], subjects: Mapping[str, Subject]) -> MessageBuffer:
        """The batch's message buffer, with the content keys of the authors of its texts."""
        authors = sorted({subjects[e.actor.key].id for e in events
                          if e.actor and e.personal.get("text") and e.event in MESSAGE_TEXT})
        return MessageBuffer(self._keys.ciphers(uow, authors, CONTENT, create=True) if authors else {})

    def apply(self, uow: UnitOfWork, project: Project, event: Event, subject: Subject | None,
              messages: MessageBuffer, received: datetime) -> bool:
        """Operational data in SQL (CONTRACT "Lifecycle effects"); True when a request was opened.
        Effects resolve by event time, not by delivery order (see each branch)."""
        name, value, at = event.event, event.raw_value, event.at
        if name in MESSAGE_DELETED or name in ("message_moderation", "report_sent"):
            messages.flush(uow)
        if name == "message_moderation" and event.message_id:
            action = value.get("action")
            if action in ("hide", "delete"):
                uow.messages.mark_deleted(project.id, event.message_id, at)
            elif action == "restore":
                uow.messages.undelete(project.id, event.message_id)
            return False
        if subject is None:
            return False
        if name in MESSAGE_SENT and event.message_id:
            messages.new.append({"project_id": project.id, "message_id": event.message_id,
                                 "room_id": event.room_id or None, "subject_id": subject.id,
                                 "text": messages.sealed(subject.id, event.personal.get("text")), "sent_at": at})
        elif name in MESSAGE_DELETED and event.message_id:  # a user deletes only their own messages
            uow.messages.mark_deleted(project.id, event.message_id, at,
                                      by=subject.id if name == "message_deleted" else None)
        elif name == "message_changed" and event.message_id and event.personal.get("text"):
            self._edited(uow, project, subject, event, messages)
        elif name == "report_sent" and event.message_id:
            uow.complaints.open(project.id, event.message_id, subject.id, report_type(value), at)
        elif name in PROFILE_NAME or name in PROFILE_AVATAR:
            self._profile(uow, subject, event)
        elif name == "user_login" and event.personal.get("ip"):
            if self._policies.for_project(project.name).store_ip:
                uow.logins.add(subject.id, self._grace(uow, subject).encrypt(event.personal["ip"], b"ip"), at)
        elif name == "delete_profile_confirmed" and event.actor and event.actor.kind == "user":
            return self._confirmed(uow, project, subject, event.actor.user_id, at, received)
        elif name == "account_restored" and event.actor and event.actor.kind == "user":
            return self._restored(uow, project, subject, event.actor.user_id, at, received)
        return False

    def _confirmed(self, uow: UnitOfWork, project: Project, subject: Subject, user_id: str, at: datetime,
                   received: datetime) -> bool:
        """A grace request from the user's confirmation, dated by the event, unless the user's
        `account_restored` is later by event time (it arrived first)."""
        subject.confirmed_event_at = lifecycle.latest(subject.confirmed_event_at, at)
        if not lifecycle.confirmation_stands(at, subject.restored_event_at):
            log.info("events.confirmation_superseded")
            return False
        _, created = self._deletions.open_in(uow, project, subject, _confirmed_request(project, user_id),
                                             asked_at=lifecycle.asked_at(at, received))
        return created

    def _restored(self, uow: UnitOfWork, project: Project, subject: Subject, user_id: str, at: datetime,
                  received: datetime) -> bool:
        """Restores the open request if the restore is not older than it. If the user confirmed
        again after this restore (that confirmation arrived first), the deletion starts again
        from that confirmation, as if the events had come in order. Returns True when a request
        was opened."""
        subject.restored_event_at = lifecycle.latest(subject.restored_event_at, at)
        row = uow.requests.open_for(subject.id, lock=True)
        if row is None or not lifecycle.restore_applies(at, row.requested_at):
            return False
        try:
            self._deletions.restore_in(uow, project, row, "user:webhook", event_at=at)
        except Conflict as exc:
            log.info("events.restore_refused", detail=str(exc))
            return False
        confirmed = subject.confirmed_event_at
        if confirmed is None or not lifecycle.confirmation_stands(confirmed, at):
            return False
        uow.flush()  # the restored request is closed before the next one opens
        _, created = self._deletions.open_in(uow, project, subject, _confirmed_request(project, user_id),
                                             asked_at=lifecycle.asked_at(confirmed, received), known_no_open=True)
        return created

    def _edited(self, uow: UnitOfWork, project: Project, subject: Subject, event: Event,
                messages: MessageBuffer) -> None:
        """The author edited a message: the stored text becomes the new one (latest edit by
        event time wins). Audited without the text. A hidden author's edits change nothing, and
        neither does an edit of a message a standing hold covers: the held text stays as it was
        (the edit itself is kept with the events, as every event is)."""
        if subject.status != SubjectStatus.ACTIVE or event.actor is None:
            return
        stored = uow.messages.get(project.id, event.message_id)
        room = stored.room_id if stored is not None and stored.room_id else event.room_id
        holding = self._holds.blocking(self._holds.standing(uow, [project.id]),
                                       Data.message(project.name, event.actor.user_id, room, event.message_id))
        if holding:
            uow.audit(AuditRecord("user:webhook", "message.edit_held", project.name,
                                  subject_hash(self._secret, project.name, event.actor.user_id),
                                  {"message_id": event.message_id, "holds": sorted(h.id for h in holding)}))
            return
        text = messages.sealed(subject.id, event.personal["text"]) or ""
        if uow.messages.edit(project.id, event.message_id, subject.id, text, event.at):
            uow.audit(AuditRecord("user:webhook", "message.edited", project.name,
                                  subject_hash(self._secret, project.name, event.actor.user_id),
                                  {"message_id": event.message_id}))

    def _grace(self, uow: UnitOfWork, subject: Subject) -> Cipher:
        """The subject's grace key: what a restore must find again (profile, IPs), destroyed at purge."""
        return self._keys.cipher(uow, subject.id, GRACE)

    def _profile(self, uow: UnitOfWork, subject: Subject, event: Event) -> None:
        """Last writer wins per field, by event time; values stored sealed under the grace key."""
        cipher = self._grace(uow, subject)
        profile = uow.profiles.get(subject.id) or Profile(subject_id=subject.id, updated_at=event.at)
        for attr, at_field, kinds, column in (("display_name", "display_name_at", PROFILE_NAME, "user_name"),
                                               ("avatar_url", "avatar_at", PROFILE_AVATAR, "url")):
            value = event.personal.get(column) or (event.personal.get("nickname") if attr == "display_name" else "")
            if event.event not in kinds or not value:
                continue
            current = unsealed(cipher, getattr(profile, attr), attr)
            if supersedes(event.at, value, getattr(profile, at_field), current):
                setattr(profile, attr, cipher.encrypt(value, attr.encode()))
                setattr(profile, at_field, event.at)
        profile.updated_at = max(t for t in (profile.display_name_at, profile.avatar_at, profile.updated_at) if t)
        uow.profiles.add(profile)


@dataclass
class MessageBuffer:
    """One batch's messages: new ones are inserted together (anything that updates messages
    flushes them first), and every text is sealed under its author's content key."""

    content: Mapping[str, Cipher]  # author subject id -> cipher
    new: list[dict[str, Any]] = field(default_factory=list)

    def sealed(self, author: str, text: str | None) -> str | None:
        cipher = self.content.get(author)
        return cipher.encrypt(text, MESSAGE_TEXT_AAD) if text and cipher is not None else None

    def flush(self, uow: UnitOfWork) -> None:
        if self.new:
            uow.messages.add(self.new)
            self.new.clear()


def _confirmed_request(project: Project, user_id: str) -> NewRequest:
    """The request a user's own `delete_profile_confirmed` opens: grace mode, no reason."""
    return NewRequest(project.id, user_id, Mode.GRACE, None, Source.USER, "user:webhook")
