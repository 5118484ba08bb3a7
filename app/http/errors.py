"""Every error leaves as {"status_code", "detail", "extra"} with a message saying what is wrong."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ValidationException

from app.services.errors import ServiceError
from app.stores.sql.repositories import InvalidCursor


def _body(status: int, detail: str, extra: Any = None) -> Response[dict[str, Any]]:
    return Response({"status_code": status, "detail": detail, "extra": extra}, status_code=status)


def service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, Any]]:
    return _body(exc.status_code, str(exc))


def invalid_cursor(_: Request[Any, Any, Any], exc: InvalidCursor) -> Response[dict[str, Any]]:
    return _body(400, f"cursor: {exc}")


def validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Name the offending fields in `detail`, not only in `extra`."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = [f"{e.get('key')}: {e.get('message')}" for e in extra if isinstance(e, dict) and e.get("key")]
    detail = "; ".join(parts) if parts else str(exc.detail)
    return _body(400, f"invalid request: {detail}", extra)


HANDLERS: MutableMapping[int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    ServiceError: service_error,
    InvalidCursor: invalid_cursor,
    ValidationException: validation_error,
}
