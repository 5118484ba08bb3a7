"""Queries, one small repository per aggregate. They never commit: the unit of work does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, String, any_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.domain.requests import OPEN_STATUSES, Mode, Status, Step
from app.domain.statuses import ProjectStatus
from app.paging import decode_time_cursor, encode_cursor
from app.stores.sql.models import (
    DeletionRequest,
    HoldRecord,
    IdempotencyKey,
    JobRun,
    Officer,
    OfficerProject,
    Profile,
    Project,
)

_Row = TypeVar("_Row")


def member_of(session: Session, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN values` for many values: on PostgreSQL one array parameter (`= ANY(:values)`),
    since sending and parsing 10,000 bind values costs more than the lookup itself."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String)))  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]


def after_cursor(query: Select[_Row], at: Any, row_id: Any, cursor: str | None) -> Select[_Row]:
    """The rows after a keyset cursor of (timestamp, id), in newest-first order."""
    if not cursor:
        return query
    after, last_id = decode_time_cursor(cursor)
    return query.where((at < after) | ((at == after) & (row_id < last_id)))


def newest_first_page(session: Session, query: Select[_Row], at: Any, row_id: Any, limit: int,
                      cursor: str | None) -> tuple[list[_Row], str | None]:
    """One page of `query`, newest first by (at, id), and the cursor of the next page, if any:
    the one way every list route pages."""
    rows = list(session.scalars(after_cursor(query, at, row_id, cursor)
                                .order_by(at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, at.key).isoformat(), getattr(last, row_id.key))


class Projects:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, project: Project) -> None:
        self.session.add(project)

    def by_name(self, name: str) -> Project | None:
        return self.session.scalar(select(Project).where(Project.name == name))

    def by_id(self, project_id: str) -> Project | None:
        return self.session.get(Project, project_id)

    def all_ids(self) -> list[str]:
        return list(self.session.scalars(select(Project.id)))

    def with_status(self, status: ProjectStatus) -> list[Project]:
        return list(self.session.scalars(select(Project).where(Project.status == status.value)
                                         .order_by(Project.name)))

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
        return per_subject(self.session, Profile.subject_id, Profile.subject_id.in_(subject_ids), subject_ids)

    def delete(self, subject_ids: Sequence[str]) -> int:
        if not subject_ids:
            return 0
        result = self.session.execute(delete(Profile).where(Profile.subject_id.in_(subject_ids)))
        return int(result.rowcount)  # type: ignore[attr-defined]


class DeletionRequests:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, request: DeletionRequest) -> None:
        self.session.add(request)  # written at commit; ids are assigned by the caller

    def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Many new requests in one executemany (a partner's batch): no ORM object per row."""
        for i in range(0, len(rows), 5_000):
            self.session.execute(insert(DeletionRequest), [{"version": 1, **row} for row in rows[i:i + 5_000]])

    def get(self, project_id: str, request_id: str, *, lock: bool = False) -> DeletionRequest | None:
        """`lock`: for a transition; the row stays locked until the transaction ends."""
        query = select(DeletionRequest).where(
            DeletionRequest.id == request_id, DeletionRequest.project_id == project_id
        )
        return self.session.scalar(locked(query) if lock else query)

    def open_for(self, subject_id: str, *, lock: bool = False) -> DeletionRequest | None:
        query = select(DeletionRequest).where(
            DeletionRequest.subject_id == subject_id,
            DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]),
        )
        return self.session.scalar(locked(query) if lock else query)

    def lock(self, request_ids: Sequence[str]) -> list[DeletionRequest]:
        """The requests, re-read and locked for a transition (in id order, the one lock order
        every writer uses: request rows first, then subjects). On SQLite the transaction began
        IMMEDIATE, so it already holds the only write lock."""
        if not request_ids:
            return []
        query = select(DeletionRequest).where(DeletionRequest.id.in_(request_ids)).order_by(DeletionRequest.id)
        return list(self.session.scalars(locked(query)))

    def open_for_many(self, subject_ids: Sequence[str]) -> dict[str, DeletionRequest]:
        if not subject_ids:
            return {}
        rows = self.session.scalars(select(DeletionRequest).where(
            member_of(self.session, DeletionRequest.subject_id, subject_ids),
            DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]),
        ))
        return {row.subject_id: row for row in rows}

    def page(
        self, project_id: str, *, subject_id: str | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[DeletionRequest], str | None]:
        """Newest first, keyset-paginated on (requested_at, id)."""
        query = select(DeletionRequest).where(DeletionRequest.project_id == project_id)
        if subject_id is not None:
            query = query.where(DeletionRequest.subject_id == subject_id)
        if status is not None:
            query = query.where(DeletionRequest.status == status)
        return self._keyset(query, limit, cursor)

    def claim(self, step: Step, now: datetime, wall: datetime, lease: timedelta, limit: int,
              exclude: Sequence[str] = (), runner: str | None = None) -> list[DeletionRequest]:
        """Lease requests whose `step` is due so that no other worker takes them.

        `now` is the job's logical instant (what is due); `wall` the real time (leases). The
        lease is short and renewed while the run lives (`renew`), so a killed run's requests
        are taken over within a minute. PostgreSQL skips rows another worker is claiming (FOR
        UPDATE SKIP LOCKED); SQLite's transaction began IMMEDIATE: one claimer at a time.
        """
        query = self._due(step, now).where(
            (DeletionRequest.lease_until.is_(None)) | (DeletionRequest.lease_until < wall))
        if exclude:
            query = query.where(DeletionRequest.id.not_in(exclude))
        query = query.order_by(DeletionRequest.requested_at).limit(limit)
        rows = list(self.session.scalars(query.with_for_update(skip_locked=True)))
        for row in rows:
            row.lease_until, row.leased_by = wall + lease, runner
        return rows

    def _due(self, step: Step, now: datetime) -> Select[DeletionRequest]:
        """The SQL form of domain.requests.step_due, to find candidates with an index; the
        erasure service decides on each claimed row with step_due itself."""
        query = select(DeletionRequest).where(
            DeletionRequest.next_step == step.value,
            DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]),
        )
        if step is Step.PURGE:
            query = query.where((DeletionRequest.mode == Mode.IMMEDIATE.value) | (DeletionRequest.grace_until <= now))
        return query

    def across(self, project_ids: Sequence[str], *, now: datetime, status: str | None, source: str | None,
               overdue: bool | None, due_before: datetime | None, limit: int,
               cursor: str | None) -> tuple[list[DeletionRequest], str | None]:
        """An officer's queue over several projects: newest first, keyset-paginated on
        (requested_at, id). `overdue`: past `due_by` while open (or, False, the others)."""
        query = select(DeletionRequest).where(DeletionRequest.project_id.in_(project_ids))
        if status is not None:
            query = query.where(DeletionRequest.status == status)
        if source is not None:
            query = query.where(DeletionRequest.source == source)
        if due_before is not None:
            query = query.where(DeletionRequest.due_by < due_before)
        if overdue is not None:
            query = query.where(_overdue(now) if overdue else ~_overdue(now))
        return self._keyset(query, limit, cursor)

    def _keyset(self, query: Select[DeletionRequest], limit: int,
                cursor: str | None) -> tuple[list[DeletionRequest], str | None]:
        return newest_first_page(self.session, query, DeletionRequest.requested_at, DeletionRequest.id, limit, cursor)

    def census(self, now: datetime) -> tuple[dict[str, int], int]:
        """How many requests are in each status, and how many open ones are past `due_by`."""
        by_status = {str(status): int(n) for status, n in self.session.execute(
            select(DeletionRequest.status, func.count()).group_by(DeletionRequest.status))}
        overdue = self.session.scalar(select(func.count()).select_from(DeletionRequest).where(_overdue(now)))
        return by_status, int(overdue or 0)

    def oldest_pending(self) -> datetime | None:
        """When the oldest request still waiting for its anonymisation was made (None: none waits)."""
        return self.session.scalar(select(func.min(DeletionRequest.requested_at))
                                   .where(DeletionRequest.status == Status.PENDING.value))

    def renew(self, request_ids: Sequence[str], runner: str, until: datetime) -> int:
        """A live run's heartbeat: its leases (still held, still its own) last until `until`.
        A plain UPDATE that leaves the row version alone: renewing is not a state change."""
        if not request_ids:
            return 0
        result = self.session.execute(update(DeletionRequest).where(
            DeletionRequest.id.in_(request_ids), DeletionRequest.leased_by == runner,
            DeletionRequest.lease_until.is_not(None),
        ).values(lease_until=until).execution_options(synchronize_session=False))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def leased_elsewhere(self, step: Step, now: datetime, wall: datetime) -> list[tuple[str, datetime, int]]:
        """Due requests another live run holds: (runner, its lease's end, how many)."""
        due = self._due(step, now).where(DeletionRequest.lease_until >= wall).subquery()
        rows = self.session.execute(select(func.coalesce(due.c.leased_by, "unknown"), func.max(due.c.lease_until),
                                           func.count()).group_by(due.c.leased_by))
        return [(str(by), until, int(n)) for by, until, n in rows]

    def of_subject(self, subject_id: str) -> list[DeletionRequest]:
        """Every request about the subject, oldest first (the access report and the export)."""
        return list(self.session.scalars(select(DeletionRequest).where(DeletionRequest.subject_id == subject_id)
                                         .order_by(DeletionRequest.requested_at)))

    def reasons_per_subject(self, subject_ids: Sequence[str]) -> dict[str, int]:
        """subject id -> how many of its requests still carry a free-text reason."""
        return per_subject(self.session, DeletionRequest.subject_id,
                           DeletionRequest.subject_id.in_(subject_ids) & DeletionRequest.reason.is_not(None),
                           subject_ids)

    def forget_reasons(self, subject_ids: Sequence[str]) -> None:
        """Drop the free-text reasons of the subjects' requests (offboarding)."""
        if subject_ids:
            self.session.execute(update(DeletionRequest).where(DeletionRequest.subject_id.in_(subject_ids))
                                 .values(reason=None))

    def by_ids(self, request_ids: Sequence[str]) -> list[DeletionRequest]:
        if not request_ids:
            return []
        return list(self.session.scalars(select(DeletionRequest).where(DeletionRequest.id.in_(request_ids))))


def _overdue(now: datetime) -> ColumnElement[bool]:
    """Open and past its Art. 12(3) deadline (SQL for domain.requests.overdue)."""
    return DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]) & (DeletionRequest.due_by < now)


def per_subject(session: Session, column: Any, where: ColumnElement[bool],
                subject_ids: Sequence[str]) -> dict[str, int]:
    """subject id -> how many rows `where` matches, grouped by `column` (0 for each subject
    with none): what an erasure step reports and then checks is gone."""
    counts = dict.fromkeys(subject_ids, 0)
    if subject_ids:
        rows = session.execute(select(column, func.count()).where(where).group_by(column))
        counts.update({str(subject_id): int(n) for subject_id, n in rows})
    return counts


def locked(query: Select[_Row]) -> Select[_Row]:
    """FOR UPDATE, and the row as it is now even if this session loaded it before."""
    return query.with_for_update().execution_options(populate_existing=True)


class Holds:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, hold: HoldRecord) -> None:
        self.session.add(hold)
        self.session.flush()  # assigns its id, which the audit entry names

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

    def sealed_not_returned(self) -> list[HoldRecord]:
        """Holds whose data sits under their own key: what `give_back` settles once they end."""
        return list(self.session.scalars(select(HoldRecord).where(HoldRecord.sealed_at.is_not(None),
                                                                  HoldRecord.returned_at.is_(None))))


class IdempotencyKeys:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, project_id: str, key: str) -> IdempotencyKey | None:
        return self.session.get(IdempotencyKey, (project_id, key))

    def add(self, record: IdempotencyKey) -> None:
        self.session.add(record)
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
        return int(self.session.execute(query).rowcount)  # type: ignore[attr-defined]


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
