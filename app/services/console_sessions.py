"""The officers' console sessions, in SQL so that every API process sees them (several
`lethe serve --workers N` processes or replicas: a browser's next request may reach any).

Logging in with an officer token starts a session: a random id goes to the browser's cookie,
only its SHA-256 is stored, with the officer token's hash and the session's CSRF token. Every
page looks the session up and authenticates that token hash again, so a revoked officer is out
at once (within the authentication cache's few seconds). A session ends at logout or after
IDLE of inactivity; its last-seen time is written at most once per TOUCH_EVERY. Logins and
logouts are audited; idle sessions are removed when the next officer logs in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.domain.audit import AuditRecord
from app.models import ConsoleSession
from app.ports import Clock, UnitOfWorkFactory
from app.retry import retry_transient
from app.services.accounts import AccountService, Principal, Role, hash_token

IDLE = timedelta(minutes=30)
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str = field(repr=False)


def _id_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class ConsoleSessionService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, accounts: AccountService) -> None:
        self._uow = uow
        self._clock = clock
        self._accounts = accounts

    def start(self, token: str) -> str | None:
        """A new session for an officer token: the id for the cookie, or None when the token is
        not a (live) officer's."""
        principal = self._accounts.authenticate(token)
        if principal is None or principal.role is not Role.OFFICER:
            return None
        sid, now = secrets.token_urlsafe(32), self._clock()
        with self._uow() as uow:
            expired = uow.console_sessions.delete_idle(now - IDLE)
            uow.console_sessions.add(ConsoleSession(id_hash=_id_hash(sid), token_hash=hash_token(token),
                                                    csrf=secrets.token_urlsafe(32), created_at=now, seen_at=now))
            uow.audit(AuditRecord(principal.actor, "console.login", None, None, {"idle_sessions_ended": expired}))
            uow.commit()
        return sid

    def get(self, sid: str | None) -> Session | None:
        """The live session of this cookie value and its officer, or None (unknown, idle too
        long, or the officer's token no longer works)."""
        if not sid:
            return None
        found = retry_transient(lambda: self._seen(_id_hash(sid), self._clock()))
        if found is None:
            return None
        token_hash, csrf = found
        principal = self._accounts.by_token_hash(token_hash)
        if principal is None or principal.role is not Role.OFFICER:
            return None
        return Session(principal, csrf)

    def _seen(self, id_hash: str, now: datetime) -> tuple[str, str] | None:
        """(token hash, CSRF token) of a live session, its last-seen time moved on; or None."""
        with self._uow() as uow:
            row = uow.console_sessions.get(id_hash)
            if row is None or row.seen_at <= now - IDLE:
                return None
            if now - row.seen_at >= TOUCH_EVERY:
                row.seen_at = now
                uow.commit()
            return row.token_hash, row.csrf

    def end(self, sid: str, principal: Principal) -> None:
        """Log out: the session is gone in every process."""
        with self._uow() as uow:
            if uow.console_sessions.delete(_id_hash(sid)):
                uow.audit(AuditRecord(principal.actor, "console.logout", None, None, {}))
            uow.commit()
