"""Small repositories: projects and officers, profiles, holds, idempotency records, job runs.
They never commit: the unit of work does. (Subjects, deletion requests and the operational
tables have modules of their own.)"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.domain.holds import KEYED_SCOPES
from app.domain.statuses import ProjectStatus
from app.models import (
    ConsoleSession,
    HeldAuthor,
    HoldRecord,
    IdempotencyKey,
    JobRun,
    Officer,
    OfficerProject,
    Profile,
    Project,
)
from app.stores.sql.operational import insert_ignoring_conflicts
from app.stores.sql.queries import is_postgresql, locked, member_of, newest_first_page, per_subject, rowcount


class Projects:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, project: Project) -> None:
        self.session.add(project)

    def by_name(self, name: str) -> Project | None:
        return self.session.scalar(select(Project).where(Project.name == name))

    def by_id(self, project_id: str) -> Project | None:
        return self.session.get(Project, project_id)

    def with_status(self, status: ProjectStatus) -> list[Project]:
        return list(self.session.scalars(select(Project).where(Project.status == status.value)
                                         .order_by(Project.name)))

    def all_names(self) -> dict[str, str]:
        """id -> name of every project, in one query."""
        return {pid: name for pid, name in self.session.execute(select(Project.id, Project.name))}

    def names(self, project_ids: Iterable[str]) -> dict[str, str]:
        """id -> name, in one query."""
        ids = sorted(set(project_ids))
        if not ids:
            return {}
        return {pid: name for pid, name in self.session.execute(
            select(Project.id, Project.name).where(Project.id.in_(ids)))}

    def by_names(self, names: Sequence[str]) -> list[Project]:
        return list(self.session.scalars(select(Project).where(Project.name.in_(names))))

    def by_api_key(self, token_hash: str) -> Project | None:
        return self.session.scalar(select(Project).where(Project.api_key_hash == token_hash))

    def by_webhook_token(self, token_hash: str) -> Project | None:
        return self.session.scalar(select(Project).where(Project.webhook_token_hash == token_hash))

    def by_webhook_url(self, secret_hash: str) -> Project | None:
        """The project whose current or previous secret-URL secret has this hash."""
        return self.session.scalar(select(Project).where(
            (Project.webhook_url_hash == secret_hash) | (Project.webhook_url_previous_hash == secret_hash)))

    def add_officer(self, officer: Officer, projects: Sequence[Project]) -> None:
        self.session.add(officer)
        self.session.flush()
        for project in projects:
            self.session.add(OfficerProject(officer_id=officer.id, project_id=project.id))

    def officer_by_name(self, name: str) -> Officer | None:
        return self.session.scalar(select(Officer).where(Officer.name == name))

    def officer_by_token(self, token_hash: str) -> tuple[Officer, list[Project]] | None:
        """The officer a token belongs to, unless revoked, with their projects."""
        officer = self.session.scalar(select(Officer).where(Officer.token_hash == token_hash,
                                                            Officer.revoked_at.is_(None)))
        if officer is None:
            return None
        return officer, self.officer_projects([officer.id])[officer.id]

    def officer_projects(self, officer_ids: Sequence[str]) -> dict[str, list[Project]]:
        found: dict[str, list[Project]] = {officer_id: [] for officer_id in officer_ids}
        rows = self.session.execute(
            select(OfficerProject.officer_id, Project).join(Project, OfficerProject.project_id == Project.id)
            .where(OfficerProject.officer_id.in_(officer_ids)).order_by(Project.name))
        for officer_id, project in rows:
            found[officer_id].append(project)
        return found

    def all(self) -> list[Project]:
        return list(self.session.scalars(select(Project).order_by(Project.name)))

    def officers(self) -> list[Officer]:
        return list(self.session.scalars(select(Officer).order_by(Officer.name)))


class Profiles:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, subject_id: str) -> Profile | None:
        return self.session.get(Profile, subject_id)

    def add(self, profile: Profile) -> None:
        self.session.add(profile)

    def per_subject(self, subject_ids: Sequence[str]) -> dict[str, int]:
        return per_subject(self.session, Profile.subject_id, subject_ids)

    def delete(self, subject_ids: Sequence[str]) -> int:
        if not subject_ids:
            return 0
        result = self.session.execute(delete(Profile).where(member_of(self.session, Profile.subject_id, subject_ids)))
        return rowcount(result)


class Holds:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, hold: HoldRecord) -> None:
        self.session.add(hold)
        self.session.flush()  # assigns its id, which the audit entry names

    def lock_projects(self, project_ids: Sequence[str], *, exclusive: bool) -> None:
        """Serialise placing holds with reading them, per project, until this transaction ends.

        A destructive transaction reads the standing holds, then deletes what they do not
        cover; on PostgreSQL (read committed) a hold committed after that read but before its
        commit would be missed, and its data deleted after the hold's 201. So placing a hold
        takes its project's lock exclusively, and every read of the standing holds takes it
        shared (a transaction-scoped advisory lock): the read waits for a placement under way to
        commit, and a placement waits for the transactions that read before it. SQLite needs
        nothing: its writers run one at a time, each seeing every commit before it."""
        if not project_ids or not is_postgresql(self.session):
            return
        take = func.pg_advisory_xact_lock if exclusive else func.pg_advisory_xact_lock_shared
        for key in sorted({_hold_lock_key(p) for p in project_ids}):  # one order: no deadlock between readers
            self.session.execute(select(take(key)))

    def get(self, hold_id: str) -> HoldRecord | None:
        return self.session.get(HoldRecord, hold_id)

    def in_projects(self, project_ids: Sequence[str]) -> list[HoldRecord]:
        """Every hold (standing or ended) in these projects, oldest first."""
        if not project_ids:
            return []
        return list(self.session.scalars(select(HoldRecord).where(HoldRecord.project_id.in_(project_ids))
                                         .order_by(HoldRecord.placed_at, HoldRecord.id)))

    def page(self, project_ids: Sequence[str], *, active_at: datetime | None, active: bool | None, limit: int,
             cursor: str | None) -> tuple[list[HoldRecord], str | None]:
        """Newest first, keyset-paginated on (placed_at, id). `active`: standing as of
        `active_at` (not released, not expired), or (False) the others."""
        query = select(HoldRecord).where(HoldRecord.project_id.in_(project_ids))
        if active is not None and active_at is not None:
            standing = (HoldRecord.released_at.is_(None) | (HoldRecord.released_at > active_at)) & (
                HoldRecord.expires_at.is_(None) | (HoldRecord.expires_at > active_at))
            query = query.where(standing if active else ~standing)
        return newest_first_page(self.session, query, HoldRecord.placed_at, HoldRecord.id, limit, cursor)

    def lock(self, hold_id: str) -> HoldRecord | None:
        return self.session.scalar(locked(select(HoldRecord).where(HoldRecord.id == hold_id)))

    def keeping(self, project_id: str) -> list[HoldRecord]:
        """A project's room and message holds whose data is not given back yet, oldest first:
        those that may take new data under their key."""
        return list(self.session.scalars(
            select(HoldRecord).where(HoldRecord.project_id == project_id, HoldRecord.returned_at.is_(None),
                                     HoldRecord.scope.in_([s.value for s in KEYED_SCOPES]))
            .order_by(HoldRecord.placed_at, HoldRecord.id)))

    def authors(self, hold_id: str) -> dict[str, str]:
        """subject id -> its user id sealed under the hold's key (HeldAuthor)."""
        return {sid: sealed for sid, sealed in self.session.execute(
            select(HeldAuthor.subject_id, HeldAuthor.user_id).where(HeldAuthor.hold_id == hold_id))}

    def add_authors(self, hold_id: str, sealed: Mapping[str, str]) -> None:
        """Record these authors (subject id -> sealed user id); those already recorded stay."""
        insert_ignoring_conflicts(self.session, HeldAuthor.__table__,  # type: ignore[arg-type]
                                  [{"hold_id": hold_id, "subject_id": sid, "user_id": token}
                                   for sid, token in sorted(sealed.items())])

    def forget_authors(self, hold_id: str) -> int:
        """The hold has ended: its authors go with its key."""
        return rowcount(self.session.execute(delete(HeldAuthor).where(HeldAuthor.hold_id == hold_id)))

    def not_returned(self) -> list[HoldRecord]:
        """Holds whose data may sit under their own key (not given back yet): what `give_back`
        settles once they end, sealed or with a key left by a sealing that never finished."""
        return list(self.session.scalars(select(HoldRecord).where(HoldRecord.returned_at.is_(None))))


class IdempotencyKeys:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, project_id: str, key: str) -> IdempotencyKey | None:
        return self.session.get(IdempotencyKey, (project_id, key))

    def start(self, project_id: str, key: str, body_hash: str, now: datetime) -> None:
        """Record a key whose first call is in flight (no answer yet). A key already there
        raises IntegrityError at once (flushed): another call took it first."""
        self.session.add(IdempotencyKey(project_id=project_id, key=key, body_hash=body_hash, status_code=None,
                                        response=None, created_at=now))
        self.session.flush()

    def remove(self, record: IdempotencyKey) -> None:
        self.session.delete(record)

    # The first answer is kept as the HTTP status it had (202: created, 200: the open request
    # already there), so a replay answers exactly as the first call did.
    def settle(self, record: IdempotencyKey, *, created: bool, response: dict[str, Any]) -> None:
        record.status_code, record.response = (202 if created else 200), response

    @staticmethod
    def answer(record: IdempotencyKey) -> tuple[bool, dict[str, Any]] | None:
        """(created, response) of a settled record; None while its first call is in flight."""
        if record.status_code is None:
            return None
        return record.status_code == 202, dict(record.response or {})

    def delete_in(self, project_id: str, before: datetime | None = None) -> int:
        """The project's idempotency records (created before `before`, if given)."""
        query = delete(IdempotencyKey).where(IdempotencyKey.project_id == project_id)
        if before is not None:
            query = query.where(IdempotencyKey.created_at < before)
        return rowcount(self.session.execute(query))


class ConsoleSessions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: ConsoleSession) -> None:
        self.session.add(row)

    def get(self, id_hash: str) -> ConsoleSession | None:
        return self.session.get(ConsoleSession, id_hash)

    def delete(self, id_hash: str) -> int:
        return rowcount(self.session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash)))

    def delete_idle(self, seen_before: datetime) -> int:
        return rowcount(self.session.execute(delete(ConsoleSession).where(ConsoleSession.seen_at < seen_before)))


class JobRuns:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, job: str, *, as_of: datetime, started_at: datetime, finished_at: datetime,
               summary: dict[str, Any]) -> None:
        """One finished run; it failed if its summary counts failures."""
        self.session.add(JobRun(job=job, as_of=as_of, started_at=started_at, finished_at=finished_at,
                                ok=not summary.get("failed"), summary=summary))

    def last(self, job: str) -> JobRun | None:
        return self.session.scalar(
            select(JobRun).where(JobRun.job == job).order_by(JobRun.finished_at.desc()).limit(1)
        )


def _hold_lock_key(project_id: str) -> int:
    """A project's advisory lock key for holds: 64 bits of a hash of a fixed label and its id."""
    digest = hashlib.sha256(f"lethe.holds\x00{project_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
