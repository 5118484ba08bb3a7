"""Request bodies and response shapes (msgspec: Litestar validates and documents them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar.params import QueryParameter

from app.domain.requests import Mode
from app.services.errors import InvalidInput

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL; no id or free text needs one
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Reference = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)]
FreeText = Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=NO_NUL)]

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="page size (at most 500)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


def aware(value: datetime | None, name: str) -> datetime | None:
    """A timestamp parameter as UTC: it must say its time zone and stay within range."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInput(f"{name}: give a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{name}: out of range") from None


class DeletionRequestIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[UserId, msgspec.Meta(examples=["BUmXxFyNMNE6FUVhL+ECSQ=="])]
    mode: Mode = Mode.GRACE
    reason: Annotated[FreeText, msgspec.Meta(examples=["the user asked by email, ticket 4711"])] | None = None


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
    overdue: bool = False  # past due_by while open (an idempotent replay from before it existed: false)
    due_extended_months: int = 0
    kept: list[Any] = msgspec.field(default_factory=list)  # room and message holds that keep part of the data


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 10,000 users to erase in one call; each gets its own outcome."""

    # 1 to 10,000 ids, checked by the service so that the answer says how many were sent
    user_ids: Annotated[list[str], msgspec.Meta(description="1 to 10,000 user ids", examples=[["u-2", "u-3"]])]
    mode: Mode = Mode.GRACE
    reason: FreeText | None = None


class BatchOutcome(msgspec.Struct):
    user_id: str
    outcome: str  # created | open | invalid
    request: str | None
    detail: str | None = None


class BatchOut(msgspec.Struct):
    batch: str
    outcomes: list[BatchOutcome]


class BatchProgress(msgspec.Struct):
    batch: str
    total: int  # requests the batch created or found open
    by_status: dict[str, int]
    listed: int  # user ids in the call
    invalid: int
    mode: str
    created_at: str


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
    problem: str | None = None  # what is wrong, in a sentence


class CheckpointOut(msgspec.Struct):
    seq: int
    hash: str
    at: str
    signature: str


class CheckpointPage(msgspec.Struct):
    items: list[CheckpointOut]
    next_cursor: str | None


class RejectedOut(msgspec.Struct):
    id: str
    received_at: str
    index: int | None
    reason: str
    body: str | None  # null once the day's key is destroyed (the entry goes with it)


class RejectedPage(msgspec.Struct):
    items: list[RejectedOut]
    next_cursor: str | None


class OfficerRequestOut(DeletionRequestOut):
    timeline: list[AuditEntryOut] = []


class OfficerRequestPage(msgspec.Struct):
    items: list[OfficerRequestOut]
    next_cursor: str | None


class ExtensionIn(msgspec.Struct, forbid_unknown_fields=True):
    months: Annotated[int, msgspec.Meta(ge=1, le=2)]
    reason: Reason


class DailyMetricsOut(msgspec.Struct):
    day: str
    dau: int
    wau: int
    mau: int
    messages: int
    reactions: int
    events: int


class DailyMetricsPage(msgspec.Struct):
    items: list[DailyMetricsOut]


class IngestOut(msgspec.Struct):
    """What a webhook call stored: accepted (duplicates included), rejected by index with why."""

    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]  # {"index": int, "detail": str}
    suppressed: int  # events of users erased moments ago: dropped, never stored


class HoldOut(msgspec.Struct):
    id: str
    project: str
    scope: str  # user | room | message | project
    target: str
    reason: str
    reference: str | None
    placed_by: str
    placed_at: str
    expires_at: str | None
    released_by: str | None
    released_at: str | None
    active: bool  # stands now (not released, not expired)


class HoldPage(msgspec.Struct):
    items: list[HoldOut]
    next_cursor: str | None


class HeldMessageOut(msgspec.Struct):
    message_id: str
    room_id: str | None
    sent_at: str
    deleted_at: str | None
    text: str | None  # opened with the hold's key (None: not readable)


class HeldEventOut(msgspec.Struct):
    event: str
    at: str
    room_id: str | None
    message_id: str | None
    personal: dict[str, str]


class HeldDataOut(msgspec.Struct):
    hold: str
    scope: str
    sealed: bool  # the hold's data is under its own key
    messages: list[HeldMessageOut]
    events: list[HeldEventOut]


class MessageOut(msgspec.Struct):
    message_id: str
    room_id: str | None
    state: str  # visible | deleted | removed | reported | archived | anonymised
    deleted_at: str | None
    open_complaints: int
    archived_at: str | None


class SuppressionOut(msgspec.Struct):
    user_id: str
    suppressed: bool


class DeliveryOut(msgspec.Struct):
    id: str
    request: str
    type: str  # deletion_request.<status>
    state: str  # pending | dead
    attempts: int
    created_at: str
    next_attempt_at: str
    last_error: str | None
    dead_at: str | None


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryOut]
    next_cursor: str | None


class HealthOut(msgspec.Struct):
    status: str  # ok


class OutboxDepthOut(msgspec.Struct):
    events: int  # acknowledged, not yet in ClickHouse
    oldest_age_seconds: float


class ReadinessOut(msgspec.Struct, omit_defaults=True):
    status: str  # ok | unavailable
    sql: str  # "ok" or "unavailable: <error type>"
    clickhouse: str  # "ok", "ok (owned by lethe worker)" or "unavailable…"
    outbox: OutboxDepthOut | None = None  # absent when SQL does not answer
