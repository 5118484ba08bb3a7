"""The SQL tables' parts of an erasure (see app.ports.SqlErasureStep)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from app.domain.events import platform_user_id
from app.domain.policy import Handles
from app.ports import DeadLetterFinder, ErasureBatch, KeyDestroyer, SqlErasureStep, Suppressor, UnitOfWork
from app.ports.repositories import Kept


class ProfilesStep:
    """Display name and avatar: hidden with the subject at once, deleted on purge."""

    name = "sql.profiles"
    handles: Handles = frozenset(("sql.profiles", c, "delete_on_purge") for c in (
        "subject_id", "display_name", "display_name_at", "avatar_url", "avatar_at", "updated_at"))

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}  # the subject's `hidden` status hides the profile everywhere it is read

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        counts = self.residual(uow, batch)
        uow.profiles.delete(batch.subject_ids)
        return {k: v for k, v in counts.items() if v}

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return uow.profiles.per_subject(batch.subject_ids)


class RequestReasonsStep:
    """The partner's free-text `reason` on the subject's requests may name the person."""

    name = "sql.deletion_requests"
    handles: Handles = frozenset({("sql.deletion_requests", "reason", "null_on_purge")})

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        counts = self.residual(uow, batch)
        uow.requests.forget_reasons(batch.subject_ids)
        return {k: v for k, v in counts.items() if v}

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return uow.requests.reasons_per_subject(batch.subject_ids)


class MessagesStep:
    """Messages show as from a deleted user at once (the subject is hidden); in immediate mode
    they are deleted, except what room and message holds keep; after grace they stay, anonymous
    (nothing links them to the person)."""

    name = "sql.messages"
    handles: Handles = frozenset({("sql.messages", "text", "kept_anonymous_deleted_if_immediate")})

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return uow.messages.per_subject(batch.subject_ids)

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        immediate = sorted(batch.immediate)
        if not immediate:
            return {}
        counts = uow.messages.per_subject_except(immediate, _kept(batch))
        uow.messages.delete_for(immediate, _kept(batch))
        return counts

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return uow.messages.per_subject_except(sorted(batch.immediate), _kept(batch)) if batch.immediate else {}


def _kept(batch: ErasureBatch) -> Kept:
    return sorted(batch.kept_rooms), sorted(batch.kept_messages)


class LoginsStep:
    """Login IPs (stored only where the policy allows): deleted on purge."""

    name = "sql.logins"
    handles: Handles = frozenset(("sql.logins", c, "delete_on_purge") for c in ("subject_id", "ip", "at"))

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        counts = self.residual(uow, batch)
        uow.logins.delete_of(batch.subject_ids)
        return {k: v for k, v in counts.items() if v}

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return uow.logins.per_subject(batch.subject_ids)


class DeadLettersStep:
    """Rejected raw bodies that mention the user id: deleted at once (they are unlinkable
    only once gone), and again on purge for any that arrived meanwhile."""

    name = "sql.dead_letters"
    handles: Handles = frozenset({("sql.dead_letters", "body", "delete_on_anonymise")})

    def __init__(self, finder: DeadLetterFinder) -> None:
        self._finder = finder

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return self._per_subject(uow, batch, self._finder.erase)

    purge = anonymise

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return self._per_subject(uow, batch, lambda u, project_id, needles: self._finder.mentioning(
            u, project_id, needles, except_held=True))

    @staticmethod
    def _per_subject(uow: UnitOfWork, batch: ErasureBatch,
                     find: Callable[[UnitOfWork, str, Sequence[str]], dict[str, list[str]]]) -> dict[str, int]:
        """`find` (entry ids by user id, per project) counted per subject of the batch. Entries a
        standing hold keeps (they name a held user too) are neither the erasure's to delete nor residue."""
        found: dict[str, int] = {}
        for project_id in sorted(set(batch.project_of.values())):
            users = {subject: platform_user_id(user) for subject, user in batch.user_of.items()
                     if batch.project_of.get(subject) == project_id}
            by_user = find(uow, project_id, sorted(set(users.values())))
            found.update({subject: len(by_user[user]) for subject, user in users.items() if by_user.get(user)})
        return found


class KeysStep:
    """A subject's data key of one purpose, destroyed in the transaction that records the step.

    - "analytics", at anonymise: every personal value of the subject's events (in ClickHouse,
      its replicas and backups) becomes unreadable at once: one key row per subject, whatever
      the size of its history, and nothing outside this transaction to go wrong.
    - "grace", at purge: what grace keeps restorable (profile, login IPs, the request's
      reason), so the copies of those rows left in WAL and backups are unreadable too.
    - "content", at the purge of `immediate` requests only: their message texts, deleted with
      the messages in the same step (after a grace-mode purge the messages stay, anonymous).
    Purpose names are app.services.keys.ANALYTICS / GRACE / CONTENT (stores do not import services).
    """

    handles: Handles = frozenset({("sql.data_keys", "owner", "delete_on_purge")})

    def __init__(self, keys: KeyDestroyer, purpose: str, *, at_anonymise: bool, immediate_only: bool = False) -> None:
        self._keys = keys
        self.purpose = purpose
        self.name = f"keys.{purpose}"
        self._at_anonymise = at_anonymise
        self._immediate_only = immediate_only

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return self._destroy(uow, batch) if self._at_anonymise else {}

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return self._destroy(uow, batch)  # a key made during grace (after a restore) goes too

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        subjects = self._subjects(batch)
        found = uow.keys.having(subjects, self.purpose)
        return {subject: int(subject in found) for subject in subjects}

    def _subjects(self, batch: ErasureBatch) -> list[str]:
        return sorted(batch.immediate) if self._immediate_only else list(batch.subject_ids)

    def _destroy(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        subjects = self._subjects(batch)
        return {owner: 1 for owner in self._keys.destroy(uow, subjects, self.purpose)} if subjects else {}


class SuppressionStep:
    """After the purge, the user (a keyed hash of them) is suppressed for a while: late events
    are dropped at the door. Nothing personal is left behind, so there is no residual."""

    name = "sql.suppressions"
    handles: Handles = frozenset()  # keyed hashes only; retention expires them (RetentionService)

    def __init__(self, suppressor: Suppressor) -> None:
        self._suppressor = suppressor

    def anonymise(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}

    def purge(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return self._suppressor.suppress_purged(uow, batch)

    def residual(self, uow: UnitOfWork, batch: ErasureBatch) -> Mapping[str, int]:
        return {}


def sql_steps(keys: KeyDestroyer, dead_letters: DeadLetterFinder, suppressor: Suppressor) -> list[SqlErasureStep]:
    """Every SQL table that holds personal data (or the keys to it), in the order they are erased."""
    return [KeysStep(keys, "analytics", at_anonymise=True), KeysStep(keys, "grace", at_anonymise=False),
            KeysStep(keys, "content", at_anonymise=False, immediate_only=True),
            ProfilesStep(), RequestReasonsStep(), MessagesStep(), LoginsStep(), DeadLettersStep(dead_letters),
            SuppressionStep(suppressor)]
