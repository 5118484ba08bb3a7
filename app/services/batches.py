"""A partner's batch of deletion requests: up to 10,000 users in one call (CONTRACT §3).

The whole batch is accepted in one transaction (every request, its audit entry and the batch's
record) or not at all. Each listed user gets an outcome: `created`, `open` (they already had an
open request, or were listed before in the same batch) or `invalid` with the reason. The
requests are then erased by the same jobs as any other, in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from app.domain.audit import AuditRecord
from app.domain.ids import new_id
from app.domain.requests import Mode, user_id_problem
from app.models import DeletionBatch
from app.ports import Clock, UnitOfWorkFactory
from app.retry import retry_lost_race, retry_transient
from app.services.deletion import DeletionService
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.idempotency import Idempotency
from app.services.views import BatchOut, BatchOutcome, BatchProgress, without_user

MAX_BATCH = 10_000  # user ids per call


class BatchService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, deletions: DeletionService, secret_key: bytes) -> None:
        self._uow = uow
        self._clock = clock
        self._deletions = deletions
        self._idempotency = Idempotency(uow, clock, secret_key)

    def submit(self, project_id: str, user_ids: Sequence[str], mode: Mode, reason: str | None, *, actor: str,
               idempotency_key: str | None = None) -> BatchOut:
        """The batch's id and one outcome per listed user id, in order. Same Idempotency-Key and
        body: the same answer."""
        if not user_ids:
            raise InvalidInput("user_ids: list at least one user id")
        if len(user_ids) > MAX_BATCH:
            raise InvalidInput(f"user_ids: at most {MAX_BATCH} user ids per batch, this one has {len(user_ids)}")
        if idempotency_key is not None:
            replay = self._idempotency.begin(project_id, idempotency_key,
                                             self._idempotency.body_hash("batch", list(user_ids), mode.value, reason))
            if replay is not None:  # stored without the user ids: the same body puts them back
                return _with_users(replay[1], user_ids)
        try:
            answer = self._submit_once_committed(project_id, user_ids, mode, reason, actor, idempotency_key)
        except BaseException:
            if idempotency_key is not None:
                self._idempotency.abandon(project_id, idempotency_key)
            raise
        if any(o.outcome == "created" for o in answer.outcomes):
            self._deletions.kick_anonymise()
        return answer

    def _submit_once_committed(self, project_id: str, user_ids: Sequence[str], mode: Mode, reason: str | None,
                               actor: str, idempotency_key: str | None) -> BatchOut:
        """`_submit` until it commits. Another writer may open a request for one of these users
        between the batch's read and its insert (PostgreSQL; the one-open-request index refuses
        the second): the batch is then read again, and that user's outcome is `open`."""
        return retry_lost_race(
            lambda: retry_transient(lambda: self._submit(project_id, user_ids, mode, reason, actor, idempotency_key)),
            Conflict("other requests for these users were being opened at the same moment; send the batch again"))

    def _submit(self, project_id: str, user_ids: Sequence[str], mode: Mode, reason: str | None, actor: str,
                idempotency_key: str | None) -> BatchOut:
        problems = {u: p for u in user_ids if (p := user_id_problem(u)) is not None}
        valid = list(dict.fromkeys(u for u in user_ids if u not in problems))
        with self._uow() as uow:
            project = uow.projects.by_id(project_id)
            assert project is not None
            opened = self._deletions.open_many(uow, project, valid, mode, reason, actor) if valid else {}
            batch = DeletionBatch(id=new_id(), project_id=project_id, created_at=self._clock(), mode=mode.value,
                                  listed=len(user_ids), invalid=sum(1 for u in user_ids if u in problems))
            uow.batches.add(batch, [request_id for request_id, _ in opened.values()])
            outcomes: list[BatchOutcome] = []
            seen: set[str] = set()
            for user in user_ids:
                if user in problems:
                    outcomes.append(BatchOutcome(user, "invalid", None, problems[user]))
                    continue
                request_id, created = opened[user]
                if user in seen:
                    outcomes.append(BatchOutcome(user, "open", request_id, "listed more than once in this batch"))
                else:
                    outcomes.append(BatchOutcome(user, "created" if created else "open", request_id))
                seen.add(user)
            counts = {kind: sum(1 for o in outcomes if o.outcome == kind) for kind in ("created", "open", "invalid")}
            uow.audit(AuditRecord(actor, "deletion_batch.created", project.name, None,
                                  {"batch_id": batch.id, "mode": mode.value, **counts}))
            answer = BatchOut(batch.id, outcomes)
            self._idempotency.settle(uow, project_id, idempotency_key, created=True, response=_without_users(answer))
            uow.commit()
        return answer

    def progress(self, project_id: str, batch_id: str) -> BatchProgress:
        """Where the batch's requests are now."""
        with self._uow() as uow:
            batch = uow.batches.get(project_id, batch_id)
            if batch is None:
                raise NotFound(f"deletion batch {batch_id} not found")
            by_status = uow.batches.by_status(batch.id)
        return BatchProgress(batch=batch.id, total=sum(by_status.values()), by_status=by_status,
                             listed=batch.listed, invalid=batch.invalid, mode=batch.mode,
                             created_at=batch.created_at.isoformat())


def _without_users(answer: BatchOut) -> dict[str, Any]:
    """What the idempotency record keeps: the answer without the user ids (only `subjects` may hold them)."""
    return {"batch": answer.batch,
            "outcomes": [without_user(o) for o in answer.outcomes]}


def _with_users(stored: dict[str, Any], user_ids: Sequence[str]) -> BatchOut:
    return BatchOut(stored["batch"], [msgspec.convert({"user_id": u, **o}, BatchOutcome)
                                      for u, o in zip(user_ids, stored["outcomes"], strict=True)])
