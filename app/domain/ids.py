"""Lethe's row ids: random UUIDs as text (nothing about a row can be read from its id)."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return str(uuid.uuid4())
