"""What Lethe holds about one user, per store and table: the basis of an access request."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from app.domain.audit import AuditRecord, subject_hash
from app.domain.crypto import Cipher
from app.domain.events import EXTRA, PERSONAL_SEALED, shown_user_id
from app.domain.holds import Data, covers
from app.models import Subject
from app.ports import EventStore, UnitOfWork, UnitOfWorkFactory
from app.services.dead_letters import DeadLetterService
from app.services.errors import NotFound
from app.services.holds import to_domain
from app.services.identities import Identities
from app.services.keys import ANALYTICS, CONTENT, GRACE, HOLD, MESSAGE_TEXT_AAD, KeyService, unsealed
from app.services.request_rows import to_view
from app.services.views import (
    ExportedEventOut,
    ExportedMessageOut,
    ExportProjectOut,
    NamingEventOut,
    ProfileOut,
    ReportProjectOut,
    SubjectExport,
    SubjectHoldOut,
    SubjectReport,
    UserDataOut,
    iso,
    utc_text,
)


class SubjectService:
    def __init__(self, uow: UnitOfWorkFactory, events: EventStore, keys: KeyService, secret_key: bytes,
                 dead_letters: DeadLetterService, identities: Identities) -> None:
        self._ids = identities
        self._dead_letters = dead_letters
        self._uow = uow
        self._events = events
        self._keys = keys
        self._secret = secret_key

    def report(self, projects: Mapping[str, str], user_id: str) -> SubjectReport:
        """`projects`: id -> name of the projects the caller may see."""
        found: list[ReportProjectOut] = []
        with self._uow() as uow:
            for project_id, name, subject in self._subjects(uow, projects, user_id):
                sql: dict[str, Any] = {
                    **uow.subjects.footprint(subject.id),
                    "sql.dead_letters": len(self._dead_letters.mentioning(uow, project_id, [user_id]).get(user_id, [])),
                }
                found.append(ReportProjectOut(**_about(uow, project_id, name, subject, user_id),
                                              stores={**sql, "clickhouse.events": self._events.count_for(subject.id)}))
        if not found:
            raise NotFound("Lethe holds nothing about this user in your projects")
        return SubjectReport(user_id, found)

    def _subjects(self, uow: UnitOfWork, projects: Mapping[str, str],
                  user_id: str) -> Iterator[tuple[str, str, Subject]]:
        """(project id, name, subject) of the user in each project the caller may see, by name."""
        for project_id, name in sorted(projects.items(), key=lambda p: p[1]):
            subject = self._ids.find(uow, project_id, user_id)
            if subject is not None:
                yield project_id, name, subject

    def export(self, projects: Mapping[str, str], user_id: str, *, actor: str) -> SubjectExport:
        """Everything Lethe holds about the user, decrypted (GDPR Art. 15/20): profile, messages,
        events with their personal values, others' events that name the user (`named_in`: what
        happened and where, not the other person's values), requests and holds, per project. Values whose key is
        destroyed are gone for everyone, this export included. The export itself is audited."""
        found: list[ExportProjectOut] = []
        with self._uow() as uow:
            for project_id, name, subject in self._subjects(uow, projects, user_id):
                (data,) = self.opened(uow, project_id, [subject])
                found.append(ExportProjectOut(**_about(uow, project_id, name, subject, user_id),
                                              profile=data.profile, messages=data.messages, events=data.events,
                                              named_in=[_naming(row, subject.id)
                                                        for row in self._events.naming(name, subject.id)]))
                uow.audit(AuditRecord(actor, "subject.exported", name, subject_hash(self._secret, name, user_id),
                                      {"events": len(found[-1].events)}))
            if not found:
                raise NotFound("Lethe holds nothing about this user in your projects")
            uow.commit()
        return SubjectExport(user_id, found)


    def opened(self, uow: UnitOfWork, project_id: str, subjects: Sequence[Subject]) -> list[UserDataOut]:
        """The subjects' profiles, messages and events, opened with the keys that still exist:
        their own, and those of the project's room and message holds that took part of their
        data. The keys are looked up once for all of them."""
        holds = [r.id for r in uow.holds.not_returned() if r.project_id == project_id]
        held = list(self._keys.ciphers(uow, holds, HOLD, create=False).values())
        ids = [s.id for s in subjects]
        analytics = self._keys.ciphers(uow, ids, ANALYTICS, create=False)
        grace = self._keys.ciphers(uow, ids, GRACE, create=False)
        content = self._keys.ciphers(uow, ids, CONTENT, create=False)
        users = self._ids.user_ids(uow, subjects)
        opened = []
        for subject in subjects:
            own = subject.id
            cipher = [*([analytics[own]] if own in analytics else []), *held]
            texts = [*([content[own]] if own in content else []), *held]
            profile = uow.profiles.get(own)
            opened.append(UserDataOut(
                user_id=shown_user_id(users[own]) if own in users else None,
                profile=None if profile is None else ProfileOut(
                    display_name=unsealed(grace.get(own), profile.display_name, "display_name"),
                    avatar_url=unsealed(grace.get(own), profile.avatar_url, "avatar_url"),
                    updated_at=profile.updated_at.isoformat()),
                messages=[ExportedMessageOut(message_id=m.message_id, room_id=m.room_id,
                                             text=unsealed(texts, m.text, MESSAGE_TEXT_AAD.decode()),
                                             sent_at=m.sent_at.isoformat(), deleted_at=iso(m.deleted_at))
                          for m in uow.messages.of_subject(own) if not m.placeholder],
                events=[_opened(row, cipher) for row in self._events.of_subject(own)]))
        return opened


def _about(uow: UnitOfWork, project_id: str, name: str, subject: Subject, user_id: str) -> dict[str, Any]:
    """What the report and the export both say of the user in one project (SubjectProjectOut's fields)."""
    requests = uow.requests.of_subject(subject.id)
    return {"project": name, "status": subject.status, "first_seen": subject.created_at.isoformat(),
            "last_seen": subject.last_seen_at.isoformat(),
            "requests": [to_view(r, name, user_id, uow.now()) for r in requests],
            "holds": _holds_on(uow, project_id, name, user_id, subject.id)}


def _opened(row: Mapping[str, Any], cipher: Sequence[Cipher]) -> ExportedEventOut:
    """One event for the export: its personal values opened where the key still exists."""
    opened = {column: unsealed(cipher, row[column], column) for column in PERSONAL_SEALED}
    extra = unsealed(cipher, row[EXTRA], EXTRA)
    return ExportedEventOut(event=row["event"], at=utc_text(row["at"]), room_id=row["room_id"] or None,
                            message_id=row["message_id"] or None, platform=row["platform"] or None,
                            personal={column: value for column, value in opened.items() if value},
                            properties={**json.loads(row["properties"] or "{}"), **json.loads(extra or "{}")})


def _naming(row: Mapping[str, Any], subject_id: str) -> NamingEventOut:
    """An event of someone else that names the subject: which of its properties do."""
    properties = json.loads(row["properties"] or "{}")
    named = sorted(key for key, value in properties.items()
                   if value == subject_id or (isinstance(value, list) and subject_id in value))
    return NamingEventOut(event=row["event"], at=utc_text(row["at"]), room_id=row["room_id"] or None,
                          message_id=row["message_id"] or None, named_as=named)


def _holds_on(uow: UnitOfWork, project_id: str, project: str, user_id: str,
              subject_id: str) -> list[SubjectHoldOut]:
    """Every hold (standing or released) that names this user, their messages or their rooms."""
    refs = uow.messages.refs([subject_id]).get(subject_id, (set(), set()))
    data = Data(project, frozenset({user_id}), frozenset(refs[0]), frozenset(refs[1]))
    rows = uow.holds.in_projects([project_id])
    return [SubjectHoldOut(id=r.id, scope=r.scope, placed_at=r.placed_at.isoformat(), released_at=iso(r.released_at))
            for r in rows if covers(to_domain(r, project), data)]
