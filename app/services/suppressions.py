"""Suppression after erasure (CONTRACT "Suppression"): once a user is purged, a keyed hash of
(project, user id) stays listed for the policy's `suppress_after_erasure_days`, and events
that user sends meanwhile are dropped at the door and counted, never stored. The hash key
derives from LETHE_SECRET_KEY; the user id itself is never kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from app.domain.audit import AuditRecord, subject_hash
from app.domain.crypto import derive_key
from app.domain.events import Event, is_admin_key
from app.models import Project
from app.ports import ErasureBatch, UnitOfWork, UnitOfWorkFactory
from app.services.errors import NotFound
from app.services.policies import PolicyBook
from app.services.views import SuppressionOut

SUPPRESSION_LABEL = b"lethe suppression v1"


class SuppressionService:
    def __init__(self, uow: UnitOfWorkFactory, policies: PolicyBook, secret_key: bytes) -> None:
        self._uow = uow
        self._policies = policies
        self._secret = secret_key
        self._key = derive_key(secret_key, SUPPRESSION_LABEL)

    def key_hash(self, project: str, user_id: str) -> str:
        return subject_hash(self._key, project, user_id)

    def suppress_purged(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        """In the purge's own transaction: list the purged users, per their project's policy."""
        names = uow.projects.names(batch.project_of.values())
        for project_id in sorted(set(batch.project_of.values())):
            days = self._policies.for_project(names[project_id]).suppress_after_erasure_days
            users = [u for s, u in batch.user_of.items()  # users who asked (not idle ones, not admins)
                     if batch.project_of.get(s) == project_id and s in batch.asked and not is_admin_key(u)]
            if days and users:
                until = uow.now() + timedelta(days=days)
                uow.suppressions.add(project_id, [self.key_hash(names[project_id], u) for u in users], uow.now(), until)
                uow.audit(AuditRecord("job:erasure", "suppressions.added", names[project_id], None,
                                      {"suppressions": len(users), "until": until.isoformat()}))
        return {}

    def end_for(self, uow: UnitOfWork, project: Project, user_ids: Sequence[str], actor: str) -> int:
        """A new deletion request for a suppressed user ends the suppression (the request takes
        over), in the caller's transaction; audited under each user's keyed subject hash."""
        hashes = {self.key_hash(project.name, u): u for u in user_ids}
        ended = uow.suppressions.remove_many(project.id, list(hashes), uow.now()) if hashes else set()
        for key_hash in sorted(ended):
            uow.audit(AuditRecord(actor, "suppression.ended", project.name,
                                  subject_hash(self._secret, project.name, hashes[key_hash]),
                                  {"by": "deletion_request"}))
        return len(ended)

    def split(self, uow: UnitOfWork, project: Project, events: Sequence[Event]) -> tuple[list[Event], int]:
        """(the events to store, how many were dropped because their user is suppressed)."""
        users = {e.actor.user_id for e in events if e.actor and e.actor.kind == "user"}
        hashes = {u: self.key_hash(project.name, u) for u in users}
        standing = uow.suppressions.standing(project.id, list(hashes.values()), uow.now())
        if not standing:
            return list(events), 0
        kept = [e for e in events
                if not (e.actor and e.actor.kind == "user" and hashes[e.actor.user_id] in standing)]
        return kept, len(events) - len(kept)

    def lift(self, project_id: str, user_id: str, *, actor: str) -> SuppressionOut:
        """The partner ends a user's suppression (audited under the user's keyed subject hash)."""
        with self._uow() as uow:
            project = uow.projects.by_id(project_id)
            assert project is not None
            if not uow.suppressions.remove(project_id, self.key_hash(project.name, user_id), uow.now()):
                raise NotFound("this user is not suppressed")
            uow.audit(AuditRecord(actor, "suppression.lifted", project.name,
                                  subject_hash(self._secret, project.name, user_id), {}))
            uow.commit()
        return SuppressionOut(user_id, suppressed=False)
