"""Repositories of the partner-integration tables: deletion batches (a partner's call for up to
10,000 users) and the completion-callback outbox. They never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from app.models import CallbackDelivery, DeletionBatch, DeletionBatchItem, DeletionRequest
from app.stores.sql.queries import newest_first_page


class DeletionBatches:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, batch: DeletionBatch, request_ids: Iterable[str]) -> None:
        self.session.add(batch)
        self.session.flush()
        items = [{"batch_id": batch.id, "request_id": rid} for rid in sorted(set(request_ids))]
        for i in range(0, len(items), 5_000):
            self.session.execute(insert(DeletionBatchItem), items[i:i + 5_000])

    def get(self, project_id: str, batch_id: str) -> DeletionBatch | None:
        batch = self.session.get(DeletionBatch, batch_id)
        return batch if batch is not None and batch.project_id == project_id else None

    def by_status(self, batch_id: str) -> dict[str, int]:
        """How many of the batch's requests are in each status now."""
        rows = self.session.execute(
            select(DeletionRequest.status, func.count()).join(DeletionBatchItem,
                                                              DeletionBatchItem.request_id == DeletionRequest.id)
            .where(DeletionBatchItem.batch_id == batch_id).group_by(DeletionRequest.status))
        return {str(status): int(n) for status, n in rows}


class Callbacks:
    """The callback outbox (app.services.callbacks)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, delivery: CallbackDelivery) -> None:
        self.session.add(delivery)

    def lease_due(self, now: datetime, until: datetime, limit: int) -> list[CallbackDelivery]:
        """Due deliveries, oldest first, leased until `until` (SKIP LOCKED: runs do not wait
        for each other's rows)."""
        rows = list(self.session.scalars(
            select(CallbackDelivery).where(CallbackDelivery.delivered_at.is_(None), CallbackDelivery.dead_at.is_(None),
                                           CallbackDelivery.next_attempt_at <= now)
            .order_by(CallbackDelivery.created_at, CallbackDelivery.id).limit(limit)
            .with_for_update(skip_locked=True)))
        for row in rows:
            row.next_attempt_at = until
        return rows

    def fail(self, delivery_id: str, error: str, now: datetime, *, dead: bool, next_attempt: datetime) -> None:
        row = self.session.get(CallbackDelivery, delivery_id)
        if row is None:
            return
        row.attempts += 1
        row.last_error = error[:200]
        row.next_attempt_at = next_attempt
        if dead:
            row.dead_at = now

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.session.execute(delete(CallbackDelivery).where(CallbackDelivery.id.in_(ids)))

    def page(self, project_id: str, *, dead: bool | None, limit: int,
             cursor: str | None) -> tuple[list[CallbackDelivery], str | None]:
        query = select(CallbackDelivery).where(CallbackDelivery.project_id == project_id)
        if dead is not None:
            query = query.where(CallbackDelivery.dead_at.is_not(None) if dead else CallbackDelivery.dead_at.is_(None))
        return newest_first_page(self.session, query, CallbackDelivery.created_at, CallbackDelivery.id, limit, cursor)

    def dead_count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(CallbackDelivery)
                                       .where(CallbackDelivery.dead_at.is_not(None))) or 0)
