"""Idempotency-Key for partner calls that create (a deletion request, a batch): the first call
with a key does the work and keeps its answer; a retry with the same key and body gets that
answer back, and the same key with another body is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.ports import Clock, UnitOfWork, UnitOfWorkFactory
from app.services.errors import Conflict, Unprocessable

IN_FLIGHT_TIMEOUT = timedelta(minutes=2)  # an in-flight key older than this was abandoned by a crash


class StillInFlight(Conflict):
    """The first call with this key has not finished: 409 with Retry-After, as for any refusal
    a client should simply repeat."""

    retry_after = 1  # seconds


class Idempotency:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, secret_key: bytes) -> None:
        self._uow = uow
        self._clock = clock
        self._key = secret_key

    def body_hash(self, *parts: Any) -> str:
        """What identifies a call's body. Keyed, so the stored hash cannot be matched against
        guessed user ids."""
        body = json.dumps(list(parts), separators=(",", ":")).encode()
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def begin(self, project_id: str, key: str, body_hash: str) -> tuple[bool, dict[str, Any]] | None:
        """Record the key as in flight (own transaction), or answer from what the first call
        did: (created, response). The caller settles the record in the transaction that does
        the work (uow.idempotency.settle), or calls `abandon` when the work fails."""
        now = self._clock()
        with self._uow() as uow:
            record = uow.idempotency.get(project_id, key)
            if record is None:
                try:
                    uow.idempotency.start(project_id, key, body_hash, now)
                    uow.commit()
                    return None
                except IntegrityError:
                    uow.rollback()
                    record = uow.idempotency.get(project_id, key)
                    assert record is not None
            if record.body_hash != body_hash:
                raise Unprocessable("Idempotency-Key was already used with a different body")
            answer = uow.idempotency.answer(record)
            if answer is None:
                if now - record.created_at < IN_FLIGHT_TIMEOUT:
                    raise StillInFlight("a request with this Idempotency-Key is still in flight; retry it in a "
                                        "second for the first one's answer")
                record.created_at = now  # abandoned by a crash: this call takes it over
                uow.commit()
                return None
            return answer

    @staticmethod
    def settle(uow: UnitOfWork, project_id: str, key: str | None, *, created: bool,
               response: dict[str, Any]) -> None:
        """Keep the first call's answer, in the transaction that did the work (no key: nothing)."""
        if key is None:
            return
        record = uow.idempotency.get(project_id, key)
        assert record is not None  # begin() recorded it
        uow.idempotency.settle(record, created=created, response=response)

    def abandon(self, project_id: str, key: str) -> None:
        """The work failed: the key is free again (unless the first call's answer is kept)."""
        with self._uow() as uow:
            record = uow.idempotency.get(project_id, key)
            if record is not None and uow.idempotency.answer(record) is None:
                uow.idempotency.remove(record)
                uow.commit()
