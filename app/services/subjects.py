"""What Lethe holds about one user, per store and table: the basis of an access request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from app.domain.holds import Data, covers
from app.ports import UnitOfWorkFactory
from app.services.deletion import to_dict
from app.services.errors import NotFound
from app.services.holds import to_domain
from app.stores.clickhouse.events import EventStore
from app.stores.sql.models import Complaint, DeletionRequest, HoldRecord, Login, Message, Profile


class SubjectService:
    def __init__(self, uow: UnitOfWorkFactory, events: EventStore) -> None:
        self._uow = uow
        self._events = events

    def report(self, projects: Mapping[str, str], user_id: str) -> dict[str, Any]:
        """`projects`: id -> name of the projects the caller may see."""
        found: list[dict[str, Any]] = []
        with self._uow() as uow:
            for project_id, name in sorted(projects.items(), key=lambda p: p[1]):
                subject = uow.subjects.find(project_id, user_id)
                if subject is None:
                    continue
                count = _counter(uow.session)
                sql: dict[str, Any] = {
                    "sql.subjects": 1,
                    "sql.profiles": count(Profile, Profile.subject_id == subject.id),
                    "sql.messages": count(Message, Message.subject_id == subject.id),
                    "sql.complaints": count(Complaint, Complaint.reporter_subject_id == subject.id),
                    "sql.logins": count(Login, Login.subject_id == subject.id),
                    "sql.dead_letters": len(uow.dead_letters.mentioning(project_id, [user_id]).get(user_id, [])),
                }
                requests = uow.session.scalars(select(DeletionRequest).where(DeletionRequest.subject_id == subject.id)
                                               .order_by(DeletionRequest.requested_at))
                found.append({
                    "project": name, "status": subject.status, "first_seen": subject.created_at.isoformat(),
                    "last_seen": subject.last_seen_at.isoformat(),
                    "stores": {**sql, "clickhouse.events": self._events.count_for(subject.id)},
                    "requests": [to_dict(r, name, user_id) for r in requests],
                    "holds": _holds_on(uow, project_id, name, user_id, subject.id),
                })
        if not found:
            raise NotFound("Lethe holds nothing about this user in your projects")
        return {"user_id": user_id, "projects": found}


def _holds_on(uow: Any, project_id: str, project: str, user_id: str, subject_id: str) -> list[dict[str, Any]]:
    """Every hold (standing or released) that names this user, their messages or their rooms."""
    refs = uow.messages.refs([subject_id]).get(subject_id, (set(), set()))
    data = Data(project, frozenset({user_id}), frozenset(refs[0]), frozenset(refs[1]))
    rows = uow.session.scalars(select(HoldRecord).where(HoldRecord.project_id == project_id)
                               .order_by(HoldRecord.placed_at))
    return [{"id": r.id, "scope": r.scope, "placed_at": r.placed_at.isoformat(),
             "released_at": r.released_at.isoformat() if r.released_at else None}
            for r in rows if covers(to_domain(r, project), data)]


def _counter(session: Any) -> Any:
    def count(model: Any, where: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(where)) or 0)

    return count
