"""The dead-letter store: webhook bodies that could not be stored, kept with the reason.

A rejected body has no known subject, so it is sealed under its project's key of the day it
arrived (owner `deadletters:<project>:<YYYY-MM-DD>`, purpose `dead_letters`). Retention deletes
the entries past `dead_letter_retention_days` and destroys their days' keys; an erasure deletes
the entries that name the user, matched on the opened body in any escaping, and seals the rest
of those days under new keys (`erase`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from app.domain.crypto import Cipher
from app.domain.events import names, searchable
from app.domain.holds import Hold, Scope
from app.ports import UnitOfWork, UnitOfWorkFactory
from app.services.holds import HoldService
from app.services.keys import DEAD_LETTERS, KeyService, day_key_owner, unsealed
from app.services.views import RejectedOut, RejectedPage

BODY = "body"  # the sealed column, bound into each token


def day_owner(project_id: str, day: date) -> str:
    return day_key_owner(DEAD_LETTERS, project_id, day)


class DeadLetterService:
    def __init__(self, uow: UnitOfWorkFactory, keys: KeyService, holds: HoldService | None = None) -> None:
        self._uow = uow
        self._keys = keys
        self._holds = holds

    def add(self, uow: UnitOfWork, project_id: str, received: datetime, reason: str, body: str,
            index: int | None) -> None:
        """Within the caller's transaction: the body sealed under the day's key."""
        owner = day_owner(project_id, received.date())
        cipher = self._keys.cipher(uow, owner, DEAD_LETTERS)
        uow.dead_letters.add(project_id, received, reason, cipher.encrypt(body, BODY.encode()), index)

    def page(self, project_id: str, limit: int, cursor: str | None) -> RejectedPage:
        """Newest first, bodies opened (an empty body reads as ""; one whose day key is gone as null)."""
        with self._uow() as uow:
            rows, next_cursor = uow.dead_letters.page(project_id, limit, cursor)
            ciphers = self._ciphers(uow, project_id, [r.received_at for r in rows])
            items = [RejectedOut(id=r.id, received_at=r.received_at.isoformat(), index=r.batch_index,
                                 reason=r.reason,
                                 body=unsealed(ciphers.get(r.received_at.date()), r.body, BODY) if r.body else "")
                     for r in rows]
        return RejectedPage(items, next_cursor)

    def mentioning(self, uow: UnitOfWork, project_id: str, needles: Sequence[str], *,
                   except_held: bool = False) -> dict[str, list[str]]:
        """Ids of the entries whose opened body names each needle (a user id), by needle.
        `except_held` (what an erasure may delete): without the entries a standing hold keeps,
        those naming a user under a user hold too, and all of them under a project hold."""
        if not needles:
            return {}
        held_users, whole_project = self._held(uow, project_id) if except_held else ([], False)
        if whole_project:
            return {}
        return _found(_mentions(self._opened(uow, project_id), [*needles, *held_users]), needles, held_users)

    def erase(self, uow: UnitOfWork, project_id: str, needles: Sequence[str]) -> dict[str, list[str]]:
        """An erasure's part (erasure_steps.DeadLettersStep): delete the entries naming these
        users (`mentioning(except_held=True)`, returned by needle), then seal the rest of their
        days under new day keys and destroy the old ones. A deleted row's bytes may outlive the
        DELETE in the database's files (PostgreSQL keeps dead tuples until a vacuum, which does
        not zero them either), and the day's key opened them: without it, they are unreadable,
        as erasure by key destruction makes everything else.

        A day with an entry that a standing user or project hold covers keeps its key: re-sealing
        would change held bytes (holds keep what they cover bit for bit). Its deleted entries'
        old bytes stay readable until the day's key goes with retention, or the hold's release."""
        if not needles:
            return {}
        held_users, whole_project = self._held(uow, project_id)
        if whole_project:
            return {}
        entries = self._opened(uow, project_id)
        hits = _mentions(entries, [*needles, *held_users])
        found = _found(hits, needles, held_users)
        gone = {entry_id for ids in found.values() for entry_id in ids}
        if not gone:
            return found
        uow.dead_letters.delete(sorted(gone))
        held_days = {day for _, day, needle in hits if needle in held_users}
        days = {day for entry_id, day, _, _ in entries if entry_id in gone} - held_days
        if not days:
            return found
        rest = [(entry_id, day, text) for entry_id, day, sealed, text in entries
                if entry_id not in gone and day in days and sealed and text is not None]
        self._keys.destroy(uow, [day_owner(project_id, day) for day in sorted(days)], DEAD_LETTERS)
        new = self._keys.ciphers(uow, sorted({day_owner(project_id, day) for _, day, _ in rest}), DEAD_LETTERS,
                                 create=True)
        uow.dead_letters.reseal({entry_id: new[day_owner(project_id, day)].encrypt(text, BODY.encode())
                                 for entry_id, day, text in rest})
        return found

    def _held(self, uow: UnitOfWork, project_id: str) -> tuple[list[str], bool]:
        """(the users standing user holds name, whether a project hold stands) in the project."""
        holds = self._holds.standing(uow, [project_id]) if self._holds is not None else []
        return [h.target for h in holds if h.scope is Scope.USER], any(h.scope is Scope.PROJECT for h in holds)

    def _opened(self, uow: UnitOfWork, project_id: str) -> list[tuple[str, date, str, str | None]]:
        """(entry id, day received, sealed body, opened body or None) of every entry of the project."""
        rows = uow.dead_letters.bodies(project_id)
        ciphers = self._ciphers(uow, project_id, [received for _, received, _ in rows])
        return [(entry_id, received.date(), sealed, unsealed(ciphers.get(received.date()), sealed, BODY))
                for entry_id, received, sealed in rows]

    def expire(self, uow: UnitOfWork, project_id: str, before: datetime | None = None,
               holds: Sequence[Hold] = ()) -> int:
        """Entries received before `before` (or all) go, and the keys of the days wholly before it,
        except what the project's standing holds cover: everything under a project hold, and the
        entries naming a user under a user hold (found as erasure finds them, in any escaping),
        with their days' keys."""
        if any(h.scope is Scope.PROJECT for h in holds):
            return 0
        users = [h.target for h in holds if h.scope is Scope.USER]
        kept = _mentions(self._opened(uow, project_id), users) if users else []
        deleted = uow.dead_letters.delete_before(project_id, before, keep={entry_id for entry_id, _, _ in kept})
        self._keys.destroy_day_keys(uow, DEAD_LETTERS, project_id, before.date() if before else None,
                                    keep={day for _, day, _ in kept})
        return deleted

    def _ciphers(self, uow: UnitOfWork, project_id: str, received: Sequence[datetime]) -> dict[date, Cipher]:
        days = sorted({at.date() for at in received})
        opened = self._keys.ciphers(uow, [day_owner(project_id, d) for d in days], DEAD_LETTERS, create=False)
        return {d: opened[day_owner(project_id, d)] for d in days if day_owner(project_id, d) in opened}


def _mentions(entries: Sequence[tuple[str, date, str, str | None]],
              needles: Sequence[str]) -> list[tuple[str, date, str]]:
    """(entry id, day received, needle) for each opened entry whose body names a needle."""
    found: list[tuple[str, date, str]] = []
    for entry_id, day, _sealed, text in entries if needles else []:
        texts = searchable(text or "")  # once per body
        found.extend((entry_id, day, needle) for needle in needles if names(texts, needle))
    return found


def _found(hits: Sequence[tuple[str, date, str]], needles: Sequence[str],
           held_users: Sequence[str]) -> dict[str, list[str]]:
    """The hits' entry ids by needle, except the entries that also name a held user."""
    kept = {entry_id for entry_id, _day, needle in hits if needle in held_users}
    wanted = set(needles)
    found: dict[str, list[str]] = {}
    for entry_id, _day, needle in hits:
        if needle in wanted and entry_id not in kept:
            found.setdefault(needle, []).append(entry_id)
    return found
