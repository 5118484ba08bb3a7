"""Request bodies and query parameters (msgspec: Litestar validates and documents them). The
answers are the services' own Structs (app/services/views.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import QueryParameter
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from app.domain.requests import Mode
from app.services.errors import InvalidInput

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

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


class Months(int):
    """1 or 2 more months, as a JSON integer. Litestar converts bodies in msgspec's lax mode
    (`"1"` and `1.0` would pass as 1); this type is decoded by `strict_months`, which takes a
    JSON integer only, and documented by `StrictTypesSchema`."""


def strict_months(_kind: type, value: Any) -> Months:
    if type(value) is not int or value not in (1, 2):
        raise TypeError("months: 1 or 2, as a JSON integer (not a string or a fraction)")
    return Months(value)


class StrictTypesSchema(OpenAPISchemaPlugin):
    """The OpenAPI schema of the strict body types above (Litestar knows nothing of them)."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is Months

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        return Schema(type=OpenAPIType.INTEGER, enum=[1, 2], description="1 or 2 more months (2 in all)")


TYPE_DECODERS = [(lambda kind: kind is Months, strict_months)]  # Litestar's type_decoders


class ExtensionIn(msgspec.Struct, forbid_unknown_fields=True):
    months: Months
    reason: Reason


