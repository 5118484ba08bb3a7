"""What the services answer: typed results (msgspec Structs).

HTTP declares them as its response types, so they are also the OpenAPI document's schemas; the
CLI prints them as JSON (`msgspec.to_builtins`). Timestamps are ISO 8601 strings as the
contract shows them (Python's `isoformat()`, `+00:00`), made by `iso()`. What only the operator
commands print is in app.services.operator_views.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec


def iso(value: datetime | None) -> str | None:
    return utc_text(value) if value is not None else None


def utc_text(value: datetime) -> str:
    """ISO 8601 with its zone. ClickHouse hands back UTC times without one (clickhouse-connect's
    naive_utc default): they are UTC, and say so."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()


def without_user(view: msgspec.Struct) -> dict[str, Any]:
    """A result as stored (idempotent replays, callback payloads): its builtins without the
    user id, which only `subjects` may hold; it is put back, or sent sealed, beside it."""
    return {k: v for k, v in msgspec.to_builtins(view).items() if k != "user_id"}


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
    due_extension_reason: str | None = None  # the officer's reason for the last extension (officers only)


class OfficerRequestPage(msgspec.Struct):
    items: list[OfficerRequestOut]
    next_cursor: str | None


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
    # a 400 (nothing accepted) also carries the common error fields (CONTRACT §3), beside the above
    status_code: int | msgspec.UnsetType = msgspec.UNSET
    detail: str | msgspec.UnsetType = msgspec.UNSET
    extra: Any = msgspec.UNSET


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
    user_id: str | None = None  # the author (kept by the hold; None if purged before the hold took it)


class HeldEventOut(msgspec.Struct):
    event: str
    at: str
    room_id: str | None
    message_id: str | None
    personal: dict[str, str]
    user_id: str | None = None  # whose event (kept by the hold; None for actor-less events)


class HeldDataOut(msgspec.Struct):
    hold: str
    scope: str
    sealed: bool  # the hold's data is under its own key (room and message holds)
    messages: list[HeldMessageOut]  # room and message holds: the messages they cover
    events: list[HeldEventOut]  # room and message holds: the events they cover
    users: list[UserDataOut] = msgspec.field(default_factory=list)  # user and project holds: each user kept
    next_cursor: str | None = None  # project holds list their users a page at a time


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
    clickhouse: str  # "ok", "ok (owned by lethe worker)" or "unavailable…" (also: the worker drains nothing)
    outbox: OutboxDepthOut | None = None  # absent when SQL does not answer



class CallbackOut(msgspec.Struct):
    url: str
    callback_secret: str  # shown once: it signs every callback (Standard Webhooks)


# --- what Lethe holds about one user (GET /v1/subjects/{user_id}[/export]) -----------------

class SubjectHoldOut(msgspec.Struct):
    """A hold (standing or released) that names the user, their messages or their rooms."""

    id: str
    scope: str
    placed_at: str
    released_at: str | None


class SubjectProjectOut(msgspec.Struct):
    """What the report and the export both say of the user in one project."""

    project: str
    status: str  # active | hidden | erased
    first_seen: str
    last_seen: str
    requests: list[DeletionRequestOut]
    holds: list[SubjectHoldOut]


class ReportProjectOut(SubjectProjectOut):
    stores: dict[str, Any]  # per store and table: the rows that still name the user


class SubjectReport(msgspec.Struct):
    """The access report for officers: where the user's data is, not the data."""

    user_id: str
    projects: list[ReportProjectOut]


class ProfileOut(msgspec.Struct):
    display_name: str | None
    avatar_url: str | None
    updated_at: str


class ExportedMessageOut(msgspec.Struct):
    message_id: str
    room_id: str | None
    text: str | None  # None once its key is destroyed
    sent_at: str
    deleted_at: str | None


class ExportedEventOut(msgspec.Struct):
    event: str
    at: str
    room_id: str | None
    message_id: str | None
    platform: str | None
    personal: dict[str, str]  # the personal values whose key still exists, opened
    properties: dict[str, Any]


class UserDataOut(msgspec.Struct):
    """One user's data, opened: what the export lists per project, and what a user or project
    hold keeps (`GET /v1/holds/{id}/data`)."""

    user_id: str | None
    profile: ProfileOut | None
    messages: list[ExportedMessageOut]
    events: list[ExportedEventOut]


class NamingEventOut(msgspec.Struct):
    """Another user's (or an admin's) event that names this user: a ban, a reply, a block..."""

    event: str
    at: str
    room_id: str | None
    message_id: str | None
    named_as: list[str]  # the event's properties that name the user (e.g. banned_user_id)


class ExportProjectOut(SubjectProjectOut):
    profile: ProfileOut | None
    messages: list[ExportedMessageOut]
    events: list[ExportedEventOut]
    named_in: list[NamingEventOut] = []  # the user's own events are in `events`


class SubjectExport(msgspec.Struct):
    """Everything Lethe holds about the user, decrypted (GDPR Art. 15/20)."""

    user_id: str
    projects: list[ExportProjectOut]
