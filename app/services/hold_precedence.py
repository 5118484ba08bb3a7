"""Holds win (CONTRACT `on_hold` and `kept`): of the requests an erasure run claimed, which go
ahead, which stop or stay on hold, which resume, and what the holds that keep data leave in
place. The rules on one hold are domain.holds (`blocking`, `stops`); this applies them to a
batch of locked requests, in the run's transaction, with their audit entries and callbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord
from app.domain.holds import Data, Hold, Scope, stops
from app.domain.requests import Status
from app.models import DeletionRequest
from app.ports import UnitOfWork
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.request_rows import apply_state, audit_subject, state_of

UsersOf = Callable[[Sequence[str]], Mapping[str, str]]  # subject ids -> user ids
Notify = Callable[[UnitOfWork, Sequence[DeletionRequest], UsersOf], None]  # transitions to callbacks


class HoldPrecedence:
    def __init__(self, holds: HoldService, identities: Identities, secret_key: bytes, notify: Notify) -> None:
        self._holds = holds
        self._ids = identities
        self._key = secret_key
        self._notify = notify

    def sort(self, uow: UnitOfWork, rows: Sequence[DeletionRequest],
             settled: bool) -> tuple[list[DeletionRequest], list[DeletionRequest], list[Hold]]:
        """Holds win. A request whose user a standing user or project hold covers (or any hold
        whose data is not under its own key yet, or any at all when `settled` is false) goes (or
        stays) on hold and is left untouched; one whose holds are gone resumes. Room and message
        holds whose data is sealed under their keys keep exactly that: the request goes ahead
        around them and lists them in `kept`. Returns (free, held) rows and the keeping holds."""
        if not rows:
            return list(rows), [], []
        holds = self._holds.standing(uow, sorted({r.project_id for r in rows}))
        if not holds and not any(r.status == Status.ON_HOLD.value or r.evidence.get("_kept") for r in rows):
            return list(rows), [], []
        keeping = [h for h in holds if settled and not stops(h)]
        names = uow.projects.names({r.project_id for r in rows})
        users = self._ids.user_ids_of(uow, [r.subject_id for r in rows])
        refs = uow.messages.refs([r.subject_id for r in rows])
        free: list[DeletionRequest] = []
        held: list[DeletionRequest] = []
        moved: list[DeletionRequest] = []  # on hold now, or resumed: transitions partners hear of
        for row in rows:
            was = row.status
            rooms, messages = refs.get(row.subject_id, (set(), set()))
            user = users.get(row.subject_id)
            data = Data(names[row.project_id], frozenset({user} if user else ()), frozenset(rooms),
                        frozenset(messages))
            covered = self._holds.blocking(holds, data)
            blocking = [h for h in covered if h not in keeping]
            subject = audit_subject(row, self._key, data.project, user)
            if blocking:
                held.append(row)
                row.lease_until = None
                listed = [{"id": h.id, "scope": h.scope.value} for h in blocking]
                if row.status != Status.ON_HOLD.value or row.evidence.get("_holds") != listed:
                    apply_state(row, lifecycle.after_held(state_of(row)))
                    row.evidence = {**row.evidence, "_holds": listed}
                    uow.audit(AuditRecord("job:erasure", "deletion_request.held", data.project, subject,
                                          {"request_id": row.id, "holds": [h["id"] for h in listed]}))
                if row.status != was:
                    moved.append(row)
                continue
            if row.status == Status.ON_HOLD.value:
                apply_state(row, lifecycle.after_released(state_of(row)))
                row.evidence = {k: v for k, v in row.evidence.items() if k != "_holds"}
                uow.audit(AuditRecord("job:erasure", "deletion_request.resumed", data.project, subject,
                                      {"request_id": row.id}))
                moved.append(row)
            kept = [{"id": h.id, "scope": h.scope.value} for h in covered]  # none of them blocks
            if row.evidence.get("_kept", []) != kept:
                row.evidence = {**{k: v for k, v in row.evidence.items() if k != "_kept"},
                                **({"_kept": kept} if kept else {})}
            free.append(row)
        self._notify(uow, moved, lambda _ids: users)
        return free, held, keeping

    def covered_in_grace(self, uow: UnitOfWork, limit: int) -> list[str]:
        """Ids of requests in grace that a standing user or project hold covers: no run claims
        them before their purge is due, yet such a hold puts them `on_hold` (CONTRACT)."""
        projects = uow.projects.all_names()
        holds = [h for h in self._holds.standing(uow, list(projects)) if h.scope in (Scope.USER, Scope.PROJECT)]
        if not holds:
            return []
        ids = {name: project_id for project_id, name in projects.items()}
        subjects = [s.id for h in holds if h.scope is Scope.USER
                    and (s := self._ids.find(uow, ids[h.project], h.target)) is not None]
        return uow.requests.in_grace_of(subjects, [ids[h.project] for h in holds if h.scope is Scope.PROJECT], limit)


Places = frozenset[tuple[str, str]]  # (project id, room) or (project id, message id)


def kept_places(uow: UnitOfWork, keeping: Sequence[Hold]) -> tuple[Places, Places]:
    """((project id, room), (project id, message id)) that keeping holds leave in place."""
    ids = {name: pid for pid, name in uow.projects.all_names().items()} if keeping else {}
    kept = [(ids[h.project], h.scope, h.target) for h in keeping if h.project in ids]
    return (frozenset((pid, target) for pid, scope, target in kept if scope is Scope.ROOM),
            frozenset((pid, target) for pid, scope, target in kept if scope is Scope.MESSAGE))
