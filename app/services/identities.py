"""Platform user ids, never stored in plaintext (issue 7, "encrypt at the door").

A subject row links a platform user to Lethe's random subject id in two columns:
- `user_key`: a keyed hash (HMAC-SHA256 under a key derived from LETHE_SECRET_KEY) of
  (project id, user id): how a user is found again. Without the secret it reveals nothing, and
  it cannot be reversed even with it (an attacker would have to guess the id);
- `user_id`: the id itself, sealed under the subject's grace key (AES-256-GCM), for what must
  show it: responses, the access report and the export.
The purge sets both to NULL and destroys the grace key, so even the copies of the row that
PostgreSQL's pages, its WAL or a backup still hold can no longer be opened.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from app.domain.audit import AuditRecord
from app.domain.crypto import derive_key
from app.domain.events import ADMIN_PREFIX, LEGACY_ADMIN_PREFIX, is_admin_key
from app.domain.ids import new_id
from app.domain.statuses import SubjectStatus
from app.models import Subject
from app.ports import UnitOfWork, UnitOfWorkFactory
from app.services.keys import GRACE, KeyService, unsealed

LOOKUP_LABEL = b"lethe/subject-lookup"
USER_ID_AAD = "subjects.user_id"  # what a sealed user id is bound to
SEAL_BATCH = 1_000  # legacy subjects sealed per transaction


class Identities:
    def __init__(self, keys: KeyService, secret_key: bytes) -> None:
        self._keys = keys
        self._lookup = derive_key(secret_key, LOOKUP_LABEL)

    def lookup(self, project_id: str, user_key: str) -> str:
        """The keyed hash a user is found by (hex)."""
        return hmac.new(self._lookup, f"{project_id}\x00{user_key}".encode(), hashlib.sha256).hexdigest()

    def find(self, uow: UnitOfWork, project_id: str, user_key: str) -> Subject | None:
        digest = self.lookup(project_id, user_key)
        return uow.subjects.find(project_id, [digest]).get(digest)

    def ensure(self, uow: UnitOfWork, project_id: str, user_keys: Iterable[str], now: datetime,
               first_seen: Mapping[str, datetime] | None = None) -> dict[str, Subject]:
        """The subject of every user key, created on first sight (concurrency-safe), with the
        user id sealed under the new subject's grace key. `first_seen`: when a new user was
        first and last active, if not `now` (its earliest event's own time): the subject's
        `created_at` (the report's `first_seen`) and `last_seen_at` both start there."""
        first_seen = first_seen or {}
        hashes = {key: self.lookup(project_id, key) for key in sorted(set(user_keys))}
        if not hashes:
            return {}
        found = uow.subjects.find(project_id, list(hashes.values()))
        missing = [key for key, digest in hashes.items() if digest not in found]
        if missing:
            ids = {key: new_id() for key in missing}
            ciphers = self._keys.new_ciphers(uow, list(ids.values()), GRACE)  # fresh ids: no key to look for
            uow.subjects.insert_missing([
                {"id": ids[key], "project_id": project_id, "user_key": hashes[key],
                 "user_id": ciphers[ids[key]].encrypt(key, USER_ID_AAD.encode()),
                 "admin": is_admin_key(key), "status": SubjectStatus.ACTIVE.value,
                 "created_at": first_seen.get(key, now), "last_seen_at": first_seen.get(key, now)}
                for key in missing])
            found.update(uow.subjects.find(project_id, [hashes[key] for key in missing]))
            lost = [ids[key] for key in missing if found[hashes[key]].id != ids[key]]
            if lost:  # a concurrent transaction created these users first: our keys seal nothing
                self._keys.destroy(uow, lost, GRACE)
        return {key: found[digest] for key, digest in hashes.items()}

    def user_ids(self, uow: UnitOfWork, subjects: Iterable[Subject]) -> dict[str, str]:
        """subject id -> the platform user key (an admin's with its ADMIN_PREFIX), opened with
        each subject's grace key. Purged subjects (no link, no key) are absent."""
        return self._opened(uow, [(s.id, s.user_id) for s in subjects])

    def user_ids_of(self, uow: UnitOfWork, subject_ids: Sequence[str]) -> dict[str, str]:
        """The same for subjects known by id (read as two columns, not as ORM objects)."""
        return self._opened(uow, uow.subjects.sealed_user_ids(subject_ids))

    def _opened(self, uow: UnitOfWork, sealed: Sequence[tuple[str, str | None]]) -> dict[str, str]:
        linked = [(sid, user_id) for sid, user_id in sealed if user_id is not None]
        if not linked:
            return {}
        ciphers = self._keys.ciphers(uow, [sid for sid, _ in linked], GRACE, create=False)
        opened = {sid: unsealed(ciphers.get(sid), user_id, USER_ID_AAD) for sid, user_id in linked}
        return {sid: user for sid, user in opened.items() if user is not None}

    def user_id(self, uow: UnitOfWork, subject: Subject | None) -> str | None:
        return None if subject is None else self.user_ids(uow, [subject]).get(subject.id)

    def rekey_admins(self, uow_factory: UnitOfWorkFactory) -> int:
        """Admins that older versions keyed as "admin:<id>" (which a chat user id could
        imitate) move to ADMIN_PREFIX: new keyed hash, key sealed again. Run once by
        `lethe migrate`; one audited transaction (admins are few); safe to run again."""
        with uow_factory() as uow:
            admins = uow.subjects.admins()
            keys = self.user_ids(uow, admins)
            grace = self._keys.ciphers(uow, [s.id for s in admins], GRACE, create=False)
            moved = 0
            for subject in admins:
                old = keys.get(subject.id, "")
                if subject.id not in grace or is_admin_key(old) or not old.startswith(LEGACY_ADMIN_PREFIX):
                    continue
                key = ADMIN_PREFIX + old.removeprefix(LEGACY_ADMIN_PREFIX)
                digest = self.lookup(subject.project_id, key)
                if uow.subjects.find(subject.project_id, [digest]):
                    continue  # already there under the new key (cannot happen before this step ran)
                subject.user_key = digest
                subject.user_id = grace[subject.id].encrypt(key, USER_ID_AAD.encode())
                moved += 1
            if moved:
                uow.audit(AuditRecord("operator:migrate", "subjects.admins_rekeyed", None, None, {"subjects": moved}))
            uow.commit()
        return moved

    def seal_legacy(self, uow_factory: UnitOfWorkFactory, batch: int = SEAL_BATCH) -> int:
        """Seal the user ids that older versions stored in plaintext (run by `lethe migrate`
        after the schema): a batch per transaction, each audited; safe to run again. Returns
        how many were sealed."""
        total = 0
        while True:
            with uow_factory() as uow:
                rows = uow.subjects.unsealed(batch)
                if not rows:
                    return total
                ciphers = self._keys.ciphers(uow, [s.id for s in rows], GRACE, create=True)
                for subject in rows:
                    user = subject.user_id or ""
                    subject.user_key = self.lookup(subject.project_id, user)
                    subject.user_id = ciphers[subject.id].encrypt(user, USER_ID_AAD.encode())
                uow.audit(AuditRecord("operator:migrate", "subjects.sealed", None, None, {"subjects": len(rows)}))
                uow.commit()
                total += len(rows)
