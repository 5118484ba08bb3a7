"""The subjects repository: the one table that links a platform user to Lethe's subject id.

Single rows for transitions (get, lock, status, destroying links), and bulk statements for
the ingest path, where a webhook batch names up to 1,000 users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, func, select, update
from sqlalchemy.orm import Session

from app.domain.policy import Handles
from app.domain.statuses import SubjectStatus
from app.models import Complaint, Login, Message, Profile, Subject, UTCDateTime
from app.stores.sql.operational import insert_ignoring_conflicts
from app.stores.sql.queries import is_postgresql, json_rows, locked, member_of, newest_first_page, rowcount


class Subjects:
    # destroy_links: the one link from a user to their subject id goes, and everything that
    # refers to the subject id is anonymous from then on
    handles: Handles = frozenset({
        ("sql.subjects", "user_key", "null_on_purge"), ("sql.subjects", "user_id", "null_on_purge"),
        *(("sql.subjects", c, "unlinked_on_purge") for c in ("id", "confirmed_event_at", "restored_event_at")),
        ("sql.messages", "subject_id", "unlinked_on_purge"),
        ("sql.complaints", "reporter_subject_id", "unlinked_on_purge"),
        ("sql.deletion_requests", "subject_id", "unlinked_on_purge"),
        ("clickhouse.events", "subject_id", "unlinked_on_purge"),
    })

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, subject_id: str) -> Subject | None:
        return self.session.get(Subject, subject_id)

    def lock(self, subject_id: str) -> Subject | None:
        """Re-read and lock the subject for a transition (after its request: one lock order)."""
        return self.session.scalar(locked(select(Subject).where(Subject.id == subject_id)))

    def by_ids(self, subject_ids: Sequence[str]) -> list[Subject]:
        if not subject_ids:
            return []
        return list(self.session.scalars(select(Subject).where(member_of(self.session, Subject.id, subject_ids))))

    def sealed_user_ids(self, subject_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        """(subject id, its sealed user id or None once purged): two columns, no ORM object,
        for the jobs that open the user ids of 10,000 subjects at a time."""
        if not subject_ids:
            return []
        rows = self.session.execute(select(Subject.id, Subject.user_id).where(
            member_of(self.session, Subject.id, subject_ids)))
        return [(subject_id, user_id) for subject_id, user_id in rows]

    def add(self, subject: Subject) -> None:
        self.session.add(subject)

    def set_status(self, subject_ids: Sequence[str], status: SubjectStatus) -> None:
        if subject_ids:
            self.session.execute(update(Subject).where(member_of(self.session, Subject.id, subject_ids))
                                 .values(status=status.value))

    def destroy_links(self, subject_ids: Sequence[str], now: datetime) -> int:
        """Forget which user each subject was: the step that makes the rest anonymous."""
        if not subject_ids:
            return 0
        result = self.session.execute(
            update(Subject).where(member_of(self.session, Subject.id, subject_ids), Subject.user_key.is_not(None))
            .values(user_key=None, user_id=None, status=SubjectStatus.ERASED.value, erased_at=now)
        )
        return rowcount(result)

    def in_project(self, project_id: str) -> list[tuple[str, str | None]]:
        """(subject id, user key) of every subject of the project (None: already unlinked)."""
        return [(sid, key) for sid, key in self.session.execute(
            select(Subject.id, Subject.user_key).where(Subject.project_id == project_id))]

    def linked_page(self, project_id: str, limit: int, cursor: str | None) -> tuple[list[Subject], str | None]:
        """A page of the project's subjects still linked to a user id, newest first."""
        query = select(Subject).where(Subject.project_id == project_id, Subject.user_key.is_not(None))
        return newest_first_page(self.session, query, Subject.created_at, Subject.id, limit, cursor)

    def idle(self, project_id: str, seen_before: datetime) -> list[Subject]:
        """Active, linked, non-admin subjects of the project last seen before `seen_before`."""
        return list(self.session.scalars(select(Subject).where(
            Subject.project_id == project_id, Subject.status == SubjectStatus.ACTIVE.value,
            Subject.user_key.is_not(None), Subject.last_seen_at < seen_before, Subject.admin.is_(False))))

    def footprint(self, subject_id: str) -> dict[str, int]:
        """How many rows of each SQL table hold the subject (the access report)."""
        def count(model: Any, where: Any) -> int:
            return int(self.session.scalar(select(func.count()).select_from(model).where(where)) or 0)

        return {"sql.subjects": 1,
                "sql.profiles": count(Profile, Profile.subject_id == subject_id),
                "sql.messages": count(Message, Message.subject_id == subject_id),
                "sql.complaints": count(Complaint, Complaint.reporter_subject_id == subject_id),
                "sql.logins": count(Login, Login.subject_id == subject_id)}

    def linked(self, subject_ids: Sequence[str]) -> int:
        return self.session.scalar(
            select(func.count()).select_from(Subject)
            .where(member_of(self.session, Subject.id, subject_ids), Subject.user_key.is_not(None))
        ) or 0

    def find(self, project_id: str, user_keys: Sequence[str]) -> dict[str, Subject]:
        """user key (the keyed hash, see app.services.identities) -> subject, for those known."""
        if not user_keys:
            return {}
        rows = self.session.scalars(select(Subject).where(Subject.project_id == project_id,
                                                          member_of(self.session, Subject.user_key, user_keys)))
        return {s.user_key: s for s in rows if s.user_key is not None}

    def admins(self) -> list[Subject]:
        """The linked subjects of platform admins, in every project (a few per partner)."""
        return list(self.session.scalars(select(Subject).where(Subject.admin.is_(True), Subject.user_key.is_not(None))
                                         .order_by(Subject.id)))

    def unsealed(self, limit: int) -> list[Subject]:
        """Linked subjects written before user ids were sealed (no keyed hash yet)."""
        return list(self.session.scalars(select(Subject).where(Subject.user_key.is_(None), Subject.user_id.is_not(None))
                                         .order_by(Subject.id).limit(limit)))

    def insert_missing(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """New subjects; a user another transaction created first keeps that one (no error)."""
        insert_ignoring_conflicts(self.session, Subject.__table__, rows)  # type: ignore[arg-type]

    def seen(self, last_seen: Mapping[str, datetime]) -> None:
        """Move each subject's last activity forward: one executemany, not an ORM update per
        subject (those re-check every loaded object: quadratic in the batch size)."""
        if not last_seen:
            return
        if is_postgresql(self.session):
            # one statement, the pairs as one JSON document; its subquery locks the rows in id order,
            # as the executemany below does: concurrent writers never wait on each other in a cycle
            given = json_rows({"sid": String(), "seen": UTCDateTime()},
                              [{"sid": sid, "seen": last_seen[sid]} for sid in sorted(last_seen)])
            due = (select(Subject.id, given.c.seen).join(given, Subject.id == given.c.sid)
                   .where(Subject.last_seen_at < given.c.seen).order_by(Subject.id)
                   .with_for_update(of=Subject).subquery())
            self.session.execute(update(Subject).where(Subject.id == due.c.id).values(last_seen_at=due.c.seen)
                                 .execution_options(synchronize_session=False))
            return
        table = Subject.__table__
        statement = (table.update()  # type: ignore[attr-defined]
                     .where(table.c.id == bindparam("sid"), table.c.last_seen_at < bindparam("seen"))
                     .values(last_seen_at=bindparam("seen")))
        # in id order: concurrent writers lock the same rows in the same order
        ordered = [{"sid": sid, "seen": last_seen[sid]} for sid in sorted(last_seen)]
        self.session.connection().execute(statement, ordered)
