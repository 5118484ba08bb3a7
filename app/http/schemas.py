"""Request bodies and query parameters (msgspec: Litestar validates and documents them). The
answers are the services' own Structs (app/services/views.py)."""

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


class ErrorBody(msgspec.Struct):
    """Every error answer (CONTRACT §3): `detail` says what is wrong; `extra` names fields."""

    status_code: int
    detail: str
    extra: Any = None


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


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 10,000 users to erase in one call; each gets its own outcome."""

    # 1 to 10,000 ids, checked by the service so that the answer says how many were sent
    user_ids: Annotated[list[str], msgspec.Meta(description="1 to 10,000 user ids", examples=[["u-2", "u-3"]])]
    mode: Mode = Mode.GRACE
    reason: FreeText | None = None


class ExtensionIn(msgspec.Struct, forbid_unknown_fields=True):
    months: Annotated[int, msgspec.Meta(ge=1, le=2)]
    reason: Reason


