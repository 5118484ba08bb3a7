"""The keyset cursors every list route issues: an opaque token (base64 of JSON) holding the
last row's sort keys. A cursor this API did not issue is an InvalidCursor (400)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from app.ports import InvalidCursor


def encode_cursor(*values: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_time_cursor(cursor: str) -> tuple[datetime, str]:
    """A keyset cursor of (timestamp, id), as the list routes issue it."""
    at, last_id = decode_cursor(cursor, 2)
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not isinstance(last_id, str):  # issued ones are UTC-aware
        raise InvalidCursor("cursor is not one this API issued")
    return when, last_id


def decode_seq_cursor(cursor: str) -> int:
    """A keyset cursor of one sequence number (the audit log's)."""
    (seq,) = decode_cursor(cursor, 1)
    if type(seq) is not int or not 0 <= seq < 2**63:  # e.g. a forged [null], [[1]] or [1e30]
        raise InvalidCursor("cursor is not one this API issued")
    return seq


def decode_cursor(cursor: str, arity: int) -> list[str | int]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidCursor("cursor is not one this API issued")
    return values
