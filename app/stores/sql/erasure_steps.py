"""The SQL tables' parts of an erasure (see app.ports.SqlErasureStep)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select, update

from app.ports import ErasureBatch, SqlErasureStep
from app.stores.sql.models import DeletionRequest, Profile
from app.stores.sql.uow import SqlUnitOfWork


def _per_subject(uow: SqlUnitOfWork, column: object, where: object, batch: ErasureBatch) -> dict[str, int]:
    rows = uow.session.execute(
        select(column, func.count()).where(where).group_by(column)  # type: ignore[call-overload]
    )
    counts = {subject_id: 0 for subject_id in batch.subject_ids}
    counts.update({str(subject_id): int(n) for subject_id, n in rows})
    return counts


class ProfilesStep:
    """Display name and avatar: hidden with the subject at once, deleted on purge."""

    name = "sql.profiles"

    def anonymise(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}  # the subject's `hidden` status hides the profile everywhere it is read

    def purge(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        counts = self.residual(uow, batch)
        uow.profiles.delete(batch.subject_ids)
        return {k: v for k, v in counts.items() if v}

    def residual(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return _per_subject(uow, Profile.subject_id, Profile.subject_id.in_(batch.subject_ids), batch)


class RequestReasonsStep:
    """The partner's free-text `reason` on the subject's requests may name the person."""

    name = "sql.deletion_requests"

    def anonymise(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}

    def purge(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        counts = self.residual(uow, batch)
        uow.session.execute(
            update(DeletionRequest).where(DeletionRequest.subject_id.in_(batch.subject_ids))
            .values(reason=None)
        )
        return {k: v for k, v in counts.items() if v}

    def residual(self, uow: SqlUnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return _per_subject(
            uow, DeletionRequest.subject_id,
            DeletionRequest.subject_id.in_(batch.subject_ids) & DeletionRequest.reason.is_not(None), batch,
        )


def sql_steps() -> list[SqlErasureStep]:
    """Every SQL table that holds personal data, in the order they are erased."""
    return [ProfilesStep(), RequestReasonsStep()]
