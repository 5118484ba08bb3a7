"""The deletion requests repository: one row per request, its lease while a job works on it,
and the queues partners and officers page through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, bindparam, func, select, update
from sqlalchemy.orm import InstanceState, Session
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from app.domain.requests import OPEN_STATUSES, Mode, Status, Step
from app.models import DeletionRequest
from app.ports.repositories import UserFilter
from app.stores.sql.operational import insert_rows
from app.stores.sql.queries import is_postgresql, json_rows, locked, member_of, newest_first_page, per_subject, rowcount


class DeletionRequests:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, request: DeletionRequest) -> None:
        self.session.add(request)  # written at commit; ids are assigned by the caller

    def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Many new requests (a partner's batch, a group commit's): Core, no ORM object per row."""
        table: Table = DeletionRequest.__table__  # type: ignore[assignment]
        for i in range(0, len(rows), 5_000):
            insert_rows(self.session, table, [{"version": 1, **row} for row in rows[i:i + 5_000]])

    def save(self, rows: Sequence[DeletionRequest]) -> None:
        """Write what changed in these (locked) rows now, one executemany per set of changed
        columns, where the ORM's flush would send one UPDATE per row (it does for versioned rows:
        10,000 round trips for a batch of 5,000 on PostgreSQL). Each row is guarded by its
        version and gets the next one, as the ORM's optimistic lock does; a row changed elsewhere
        meanwhile raises StaleDataError (retried as a transient failure). Afterwards the rows are
        clean in the session: its flush has nothing left of them to write."""
        table: Table = DeletionRequest.__table__  # type: ignore[assignment]
        groups: dict[tuple[str, ...], list[tuple[DeletionRequest, dict[str, Any], int]]] = {}
        for row in rows:
            state = instance_state(row)
            changed = {key: state.dict[key] for key in state.committed_state if key != "version"}
            if changed:
                version = state.committed_state.get("version", row.version)
                groups.setdefault(tuple(sorted(changed)), []).append((row, changed, version))
        for keys, members in groups.items():
            for start in range(0, len(members), 5_000):
                chunk = members[start:start + 5_000]
                if self._write(table, keys, chunk) != len(chunk):
                    raise StaleDataError("a deletion request changed while this transaction held it")
            for row, _changed, version in members:
                set_committed_value(row, "version", version + 1)
        # The rows are written: mark them clean, as the ORM does after its own flush (the values
        # stay, their history goes). set_committed_value alone would leave them flagged modified,
        # and every later flush (autoflush before each query) would walk all of them, 44 columns
        # each, to find nothing to write: about 0.8 s of a 10,000-request anonymise run.
        InstanceState._commit_all_states([(state, state.dict) for state in map(instance_state, rows)],
                                         self.session.identity_map)

    def _write(self, table: Table, keys: tuple[str, ...],
               members: Sequence[tuple[DeletionRequest, dict[str, Any], int]]) -> int:
        """One UPDATE of these rows' changed `keys`, each guarded by its version; rows written.
        PostgreSQL: one statement joining the rows sent as one JSON document (`queries.json_rows`),
        where an executemany runs a statement per row (0.45 s of a 10,000-request anonymise run).
        Executed on the connection: the session's autoflush would write the rows one by one."""
        connection = self.session.connection()
        if is_postgresql(self.session):
            given = json_rows({"_id": table.c.id.type, "_version": table.c.version.type,
                               **{f"_{key}": table.c[key].type for key in keys}},
                              [{"_id": row.id, "_version": version, **{f"_{key}": changed[key] for key in keys}}
                               for row, changed, version in members])
            statement = (table.update()
                         .where(table.c.id == given.c._id, table.c.version == given.c._version)
                         .values({**{key: given.c[f"_{key}"] for key in keys}, "version": given.c._version + 1}))
            return rowcount(connection.execute(statement))
        statement = (table.update()
                     .where(table.c.id == bindparam("_id"), table.c.version == bindparam("_version"))
                     .values({**{key: bindparam(f"_{key}") for key in keys}, "version": bindparam("_next")}))
        return rowcount(connection.execute(statement, [
            {**{f"_{key}": value for key, value in changed.items()}, "_id": row.id, "_version": version,
             "_next": version + 1} for row, changed, version in members]))

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
        query = (select(DeletionRequest).where(member_of(self.session, DeletionRequest.id, request_ids))
                 .order_by(DeletionRequest.id))
        return list(self.session.scalars(locked(query)))

    def open_for_many(self, subject_ids: Sequence[str]) -> dict[str, DeletionRequest]:
        if not subject_ids:
            return {}
        rows = self.session.scalars(select(DeletionRequest).where(
            member_of(self.session, DeletionRequest.subject_id, subject_ids),
            DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]),
        ))
        return {row.subject_id: row for row in rows}

    def in_grace_of(self, subject_ids: Sequence[str], project_ids: Sequence[str], limit: int) -> list[str]:
        """Ids of the requests in grace, oldest first, of these subjects or of every user of these
        projects (what standing user and project holds cover)."""
        if not subject_ids and not project_ids:
            return []
        return list(self.session.scalars(
            select(DeletionRequest.id).where(
                DeletionRequest.status == Status.IN_GRACE.value,
                member_of(self.session, DeletionRequest.subject_id, subject_ids)
                | DeletionRequest.project_id.in_(project_ids))
            .order_by(DeletionRequest.requested_at).limit(limit)))

    def open_without_audit_subject(self, after: str, limit: int) -> list[tuple[str, str, str]]:
        """(id, project id, subject id) of open requests made before `audit_subject` existed,
        by id, after `after`."""
        rows = self.session.execute(
            select(DeletionRequest.id, DeletionRequest.project_id, DeletionRequest.subject_id)
            .where(DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]),
                   DeletionRequest.audit_subject.is_(None), DeletionRequest.id > after)
            .order_by(DeletionRequest.id).limit(limit))
        return [(request_id, project_id, subject_id) for request_id, project_id, subject_id in rows]

    def set_audit_subjects(self, subjects: Mapping[str, str]) -> None:
        """request id -> audit subject, where the request has none yet (one executemany). The
        version stays: no transition, and nothing a transition writes, changes."""
        if subjects:
            table: Table = DeletionRequest.__table__  # type: ignore[assignment]
            self.session.execute(
                table.update().where(table.c.id == bindparam("_id"), table.c.audit_subject.is_(None))
                .values(audit_subject=bindparam("_subject")),
                [{"_id": request_id, "_subject": subject} for request_id, subject in subjects.items()])

    def page(
        self, project_id: str, *, user: UserFilter | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[DeletionRequest], str | None]:
        """Newest first, keyset-paginated on (requested_at, id)."""
        query = select(DeletionRequest).where(DeletionRequest.project_id == project_id)
        if user is not None:
            mine = DeletionRequest.audit_subject == user.audit_subject
            if user.subject_id is not None:  # requests older than audit_subject have none
                mine = mine | (DeletionRequest.subject_id == user.subject_id)
            query = query.where(mine)
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
            query = query.where(~member_of(self.session, DeletionRequest.id, exclude))
        candidates = (query.with_only_columns(DeletionRequest.id).order_by(DeletionRequest.requested_at)
                      .limit(limit).with_for_update(skip_locked=True))
        # One UPDATE ... RETURNING takes the leases and reads the rows (the version moves on, as
        # the ORM's optimistic lock expects): not a SELECT then an UPDATE per row.
        leased = (update(DeletionRequest).where(DeletionRequest.id.in_(candidates.scalar_subquery()))
                  .values(lease_until=wall + lease, leased_by=runner, version=DeletionRequest.version + 1)
                  .returning(DeletionRequest))
        rows = self.session.scalars(leased, execution_options={"synchronize_session": False,
                                                                "populate_existing": True})
        return sorted(rows, key=lambda row: (row.requested_at, row.id))

    def _due(self, step: Step, now: datetime) -> Select[DeletionRequest]:
        """The SQL form of domain.requests.step_due, to find candidates with an index; the
        erasure service decides on each claimed row with step_due itself."""
        query = select(DeletionRequest).where(
            DeletionRequest.next_step == step.value,
            DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]),
        )
        if step is Step.PURGE:
            # on hold: claimed by every run, before its purge is due, so that the holds it lists
            # follow releases (it resumes, or lists the holds that still stop it)
            query = query.where((DeletionRequest.mode == Mode.IMMEDIATE.value) | (DeletionRequest.grace_until <= now)
                                | (DeletionRequest.status == Status.ON_HOLD.value))
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
            member_of(self.session, DeletionRequest.id, request_ids), DeletionRequest.leased_by == runner,
            DeletionRequest.lease_until.is_not(None),
        ).values(lease_until=until).execution_options(synchronize_session=False))
        return rowcount(result)

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
        return per_subject(self.session, DeletionRequest.subject_id, subject_ids, DeletionRequest.reason.is_not(None))

    def forget_reasons(self, subject_ids: Sequence[str]) -> None:
        """Drop the free-text reasons of the subjects' requests (offboarding)."""
        if subject_ids:
            self.session.execute(update(DeletionRequest)
                                 .where(member_of(self.session, DeletionRequest.subject_id, subject_ids))
                                 .values(reason=None))

    def by_ids(self, request_ids: Sequence[str]) -> list[DeletionRequest]:
        if not request_ids:
            return []
        query = select(DeletionRequest).where(member_of(self.session, DeletionRequest.id, request_ids))
        return list(self.session.scalars(query))


def _overdue(now: datetime) -> ColumnElement[bool]:
    """Open and past its Art. 12(3) deadline (SQL for domain.requests.overdue)."""
    return DeletionRequest.status.in_([s.value for s in OPEN_STATUSES]) & (DeletionRequest.due_by < now)
