"""Regulatory holds: officers place and release them; every destructive step asks them first."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from app.domain.audit import AuditRecord, subject_hash
from app.domain.holds import Data, Hold, Scope, T, covering, keeper, split
from app.domain.policy import Handles
from app.models import HoldRecord
from app.ports import Clock, Held, MessageRef, UnitOfWork, UnitOfWorkFactory
from app.retry import retry_transient
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.identities import Identities
from app.services.policies import PolicyBook
from app.services.views import HoldOut, HoldPage, iso


def hold_view(row: HoldRecord, project: str, now: datetime) -> HoldOut:
    return HoldOut(id=row.id, project=project, scope=row.scope, target=row.target, reason=row.reason,
                   reference=row.reference, placed_by=row.placed_by, placed_at=row.placed_at.isoformat(),
                   expires_at=iso(row.expires_at), released_by=row.released_by, released_at=iso(row.released_at),
                   active=to_domain(row, project).stands(now))


def to_domain(row: HoldRecord, project: str) -> Hold:
    return Hold(row.id, project, Scope(row.scope), row.target, row.placed_at, row.expires_at, row.released_at,
                sealed=row.sealed_at is not None)


STANDING_IN_TRANSACTION = "holds.standing"  # uow.info key: the standing holds this transaction read


class HoldService:
    handles: Handles = frozenset({("sql.holds", "target", "kept_as_legal_record"),
                                  ("sql.holds", "reason", "kept_as_legal_record")})

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, policies: PolicyBook, identities: Identities,
                 secret_key: bytes, on_change: Callable[[], object] = lambda: None) -> None:
        self._on_change = on_change  # the erasure job seals what a new hold covers (services.held)
        self._secret = secret_key  # a user hold's audit entries name its user by keyed hash
        self._ids = identities
        self._uow = uow
        self._clock = clock
        self._policies = policies

    # --- officers ----------------------------------------------------------------------
    def place(self, project_id: str, project: str, scope: Scope, target: str, reason: str, *,
              reference: str | None, expires_at: datetime | None, actor: str) -> HoldOut:
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at: must be in the future")
        if scope is Scope.PROJECT and target != project:
            raise InvalidInput("target: a project hold names its project")
        def placed() -> HoldRecord:
            with self._uow() as uow:
                # no destructive transaction that has read the standing holds may still commit after
                # this one: they finish first, later ones see this hold (HoldsRepository.lock_projects)
                uow.holds.lock_projects([project_id], exclusive=True)
                row = HoldRecord(project_id=project_id, scope=scope.value, target=target, reason=reason,
                                 reference=reference, placed_by=actor, placed_at=now, expires_at=expires_at)
                uow.holds.add(row)
                # The audit entry names the hold, never its target (which may be a user id); a user
                # hold's entries carry the user's keyed hash, so the user's trail shows them.
                uow.audit(AuditRecord(actor, "hold.placed", project, self._subject(scope, project, target),
                                      {"hold_id": row.id, "scope": scope.value, "reference": reference}))
                uow.commit()
                return row

        # waiting for the lock behind readers that wait on each other's rows may end in a
        # deadlock PostgreSQL breaks by aborting one: then this placement is tried again
        row = retry_transient(placed)
        self._on_change()
        return hold_view(row, project, now)

    def release(self, projects: dict[str, str], hold_id: str, *, actor: str) -> HoldOut:
        now = self._clock()
        with self._uow() as uow:
            row = uow.holds.get(hold_id)
            if row is None or row.project_id not in projects:
                raise NotFound(f"hold {hold_id} not found")
            if row.released_at is not None:
                raise Conflict("the hold was already released")
            row.released_at, row.released_by = now, actor
            project = projects[row.project_id]
            uow.audit(AuditRecord(actor, "hold.released", project, self._subject(Scope(row.scope), project, row.target),
                                  {"hold_id": row.id}))
            uow.commit()
        self._on_change()
        return hold_view(row, projects[row.project_id], now)

    def _subject(self, scope: Scope, project: str, target: str) -> str | None:
        return subject_hash(self._secret, project, target) if scope is Scope.USER else None

    def page(self, projects: dict[str, str], *, active: bool | None, limit: int, cursor: str | None) -> HoldPage:
        now = self._clock()
        with self._uow() as uow:
            rows, next_cursor = uow.holds.page(list(projects), active_at=now, active=active, limit=limit,
                                               cursor=cursor)
        return HoldPage([hold_view(row, projects[row.project_id], now) for row in rows], next_cursor)

    # --- every destructive step --------------------------------------------------------
    # Whether a hold stands is a fact of the real world, so these ask the service's clock, never
    # a job's `now`: a run `--now` in the future must not see a hold as expired (or released
    # long enough) before it is, and one `--now` in the past sees every hold committed since.
    def standing(self, uow: UnitOfWork, project_ids: Sequence[str]) -> list[Hold]:
        """Holds that may still block work in these projects (release delay included). Until
        the caller's transaction ends, no hold can be placed in them: what it deletes on the
        strength of this answer, it deletes before any new hold stands. So the answer is read
        once per transaction (a webhook batch asks for every edit it applies): a release seen
        later in it would only keep data a little longer."""
        if not project_ids:
            return []
        read: dict[tuple[str, ...], list[Hold]] = uow.info.setdefault(STANDING_IN_TRANSACTION, {})
        asked = tuple(sorted(set(project_ids)))
        if asked in read:
            return read[asked]
        uow.holds.lock_projects(project_ids, exclusive=False)
        now = self._clock()
        names = uow.projects.names(project_ids)
        rows = uow.holds.in_projects(project_ids)
        holds = [to_domain(r, names[r.project_id]) for r in rows]
        read[asked] = standing = [h for h in holds if h.stands(now, self.delay(h.project))]
        return standing

    def keeping(self, uow: UnitOfWork, project_id: str, project: str) -> list[Hold]:
        """A project's standing room and message holds: new data they cover goes under their keys."""
        now, delay = self._clock(), self.delay(project)
        return [h for h in (to_domain(r, project) for r in uow.holds.keeping(project_id)) if h.stands(now, delay)]

    def keeper(self, holds: Sequence[Hold], data: Data) -> Hold | None:
        """Which of `keeping`'s holds takes `data` (domain.holds.keeper)."""
        return keeper(holds, data, self._clock(), self.delay(data.project))

    def delay(self, project: str) -> timedelta:
        return timedelta(hours=self._policies.for_project(project).hold_release_delay_hours)

    def blocking(self, holds: Sequence[Hold], data: Data) -> list[Hold]:
        return covering(holds, data, self._clock(), self.delay(data.project))

    def split(self, project: str, pieces: Iterable[tuple[T, Data]], holds: Sequence[Hold]) -> tuple[list[T], list[T]]:
        """(free, held) pieces of one project's data, with the project's release delay."""
        return split(pieces, holds, self._clock(), self.delay(project))

    def split_messages(self, uow: UnitOfWork, project: str, project_id: str, messages: Sequence[MessageRef],
                       holds: Sequence[Hold]) -> tuple[list[MessageRef], list[MessageRef]]:
        """(free, held) messages: holds name a message by its author's user id, room and id."""
        authors = self._ids.user_ids_of(uow, sorted({m.subject_id for m in messages if m.subject_id}))
        return self.split(project, ((m, Data.message(project, authors.get(m.subject_id or ""), m.room_id,
                                                     m.message_id)) for m in messages), holds)

    def in_events(self, uow: UnitOfWork, holds: Sequence[Hold]) -> Held:
        """The standing holds in the terms of the events table (users become subject ids)."""
        ids = {name: pid for pid, name in uow.projects.all_names().items()}
        subjects: set[str] = set()
        for h in holds:
            if h.scope is Scope.USER and h.project in ids:
                subject = self._ids.find(uow, ids[h.project], h.target)
                if subject is not None:
                    subjects.add(subject.id)
        return Held(
            projects=frozenset(h.project for h in holds if h.scope is Scope.PROJECT),
            subjects=frozenset(subjects),
            rooms=frozenset((h.project, h.target) for h in holds if h.scope is Scope.ROOM),
            messages=frozenset((h.project, h.target) for h in holds if h.scope is Scope.MESSAGE),
        )
