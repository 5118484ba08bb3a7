"""Request bodies and response shapes (msgspec: Litestar validates and documents them)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.params import QueryParameter

from app.domain.requests import Mode

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="page size (at most 500)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


class DeletionRequestIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    mode: Mode = Mode.GRACE
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class DeletionRequestOut(msgspec.Struct):
    id: str
    project: str
    user_id: str | None
    mode: str
    source: str
    status: str
    requested_at: str
    grace_until: str
    due_by: str
    anonymised_at: str | None
    completed_at: str | None
    restored_at: str | None
    holds: list[Any]
    evidence: dict[str, Any]
    detail: str | None


class DeletionRequestPage(msgspec.Struct):
    items: list[DeletionRequestOut]
    next_cursor: str | None


class AuditEntryOut(msgspec.Struct):
    seq: int
    at: str
    actor: str
    action: str
    project: str | None
    subject: str | None
    details: dict[str, Any]
    hash: str
    prev_hash: str


class AuditPage(msgspec.Struct):
    items: list[AuditEntryOut]
    next_cursor: str | None


class VerifyOut(msgspec.Struct):
    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None


class RejectedOut(msgspec.Struct):
    id: str
    received_at: str
    index: int | None
    reason: str
    body: str


class RejectedPage(msgspec.Struct):
    items: list[RejectedOut]
    next_cursor: str | None
