"""Every error leaves as {"status_code", "detail", "extra"} with a message saying what is wrong.

Input that cannot even be decoded (bytes that are not UTF-8, JSON nested past the parser's
depth) is the caller's mistake, so it is a 400 like any other; anything unforeseen is a 500
with the same body shape and no internals.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from clickhouse_connect.driver import exceptions as ch_errors
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from sqlalchemy import exc as sql_errors

from app.http.inputs import MAX_BODY
from app.ports import EmbeddedStoreBusy, InvalidCursor
from app.services.errors import (
    AlreadyExists,
    Broken,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
    Unauthenticated,
    Unavailable,
    Unprocessable,
)

log = structlog.get_logger(__name__)

TRUNCATED = "Input data was truncated"  # what msgspec says of a body cut short


def _body(status: int, detail: str, extra: Any = None, headers: dict[str, str] | None = None
          ) -> Response[dict[str, Any]]:
    return Response({"status_code": status, "detail": detail, "extra": extra}, status_code=status, headers=headers)


# What each service error means in HTTP; the most specific class wins (OutboxFull is Unavailable).
STATUS_OF: dict[type[ServiceError], int] = {
    InvalidInput: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409, AlreadyExists: 409,
    Unprocessable: 422, Broken: 500, Unavailable: 503,
}


def status_of(exc: ServiceError) -> int:
    return next((STATUS_OF[c] for c in type(exc).__mro__ if c in STATUS_OF), 400)


def service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, Any]]:
    retry_after = getattr(exc, "retry_after", None)
    return _body(status_of(exc), str(exc), headers={"Retry-After": str(retry_after)} if retry_after else None)


def invalid_cursor(_: Request[Any, Any, Any], exc: InvalidCursor) -> Response[dict[str, Any]]:
    return _body(400, f"cursor: {exc}")


def validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Name the offending fields in `detail`, not only in `extra`."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = [f"{_field(e)}: {_message(e)}" for e in extra if isinstance(e, dict) and e.get("key")]
    detail = "; ".join(parts) if parts else str(exc.detail)
    return _body(400, f"invalid request: {detail}", extra)


def _field(error: dict[str, Any]) -> str:
    """The name the caller used: a header by its header name (`idempotency_key` is the
    handler's parameter for the `Idempotency-Key` header), the body as `body` (`data` is the
    handler's parameter)."""
    key, source = str(error.get("key")), error.get("source")
    if source == "header":
        return key.replace("_", "-").title()
    return "body" if source == "body" and key == "data" else key


def _message(error: dict[str, Any]) -> str:
    # an empty body reaches Litestar's decoder as a missing `data` and says only "'data'"
    return "a JSON object is required" if error.get("message") == "'data'" else str(error.get("message"))


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Litestar's own errors (401, 403, 404, 405, 413, 429...) in the same shape, headers kept
    (Allow, Retry-After). A body the JSON decoder refused says so."""
    detail = str(exc.detail)
    headers = dict(exc.headers or {})
    if isinstance(exc.__cause__, SerializationException):
        # msgspec >= 0.19 reports bad UTF-8 itself (older ones raised UnicodeDecodeError: `undecodable`)
        if detail == TRUNCATED:  # msgspec's word for a lone high surrogate too (`"\ud800"`)
            detail = ("it ends too soon, or a \\u escape of a high surrogate (\\ud800-\\udbff) is not followed "
                      "by its low surrogate")
        detail = ("invalid request: the body is not valid UTF-8" if "utf-8" in detail.lower()
                  else f"invalid request: the body is not valid JSON ({detail})")
    if exc.status_code == 413:
        detail = (f"the body is larger than {MAX_BODY // 2**20} MiB, the most one call may send: "
                  "split it into smaller calls")
    if exc.status_code == 429:  # the rate limiter sends RateLimit-Reset; clients expect Retry-After
        headers.setdefault("Retry-After", str(max(1, int(headers.get("RateLimit-Reset", "1")))))
        detail = "too many requests for this credential: slow down and retry after the Retry-After seconds"
    return _body(exc.status_code, detail, exc.extra or None, headers)


def undecodable(_: Request[Any, Any, Any], exc: UnicodeDecodeError | RecursionError) -> Response[dict[str, Any]]:
    detail = ("the body is not valid UTF-8" if isinstance(exc, UnicodeDecodeError)
              else "the body nests too deeply to be read")
    return _body(400, f"invalid request: {detail}")


def store_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A store does not answer (connection refused, database locked past every retry): nothing
    was done, and the caller should retry; never a 500."""
    store = "ClickHouse" if isinstance(exc, ch_errors.Error) else "the SQL database"
    log.warning("http.store_unavailable", store=store, error=type(exc).__name__)
    return _body(503, f"{store} is unavailable right now; nothing was changed, retry later",
                 headers={"Retry-After": "5"})


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("http.internal_error", error=type(exc).__name__, path_template=request.scope.get("path_template"))
    return _body(500, "internal error: the request was not completed; it is safe to send it again")


def clickhouse_elsewhere(_: Request[Any, Any, Any], exc: EmbeddedStoreBusy) -> Response[dict[str, Any]]:
    """Another process owns the embedded ClickHouse: this read cannot be served here (503, says why)."""
    return _body(503, str(exc), headers={"Retry-After": "60"})


HANDLERS: MutableMapping[int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    ServiceError: service_error,
    InvalidCursor: invalid_cursor,
    ValidationException: validation_error,
    HTTPException: http_error,
    UnicodeDecodeError: undecodable,
    RecursionError: undecodable,
    sql_errors.OperationalError: store_unavailable,
    sql_errors.InterfaceError: store_unavailable,
    ch_errors.OperationalError: store_unavailable,
    EmbeddedStoreBusy: clickhouse_elsewhere,
    Exception: internal_error,
}

# answered by a handler above with a 4xx or 503: refusals, not faults
REFUSALS: tuple[type[Exception], ...] = (UnicodeDecodeError, RecursionError, InvalidCursor, ServiceError,
                                         sql_errors.OperationalError, sql_errors.InterfaceError,
                                         ch_errors.OperationalError, EmbeddedStoreBusy)


def log_fault(logger: Any, scope: Any, _traceback: list[str]) -> None:
    """Litestar's exception log: only faults (a 500) are an error line with their traceback. A
    refusal (any 4xx, a 503) is the caller's or a store's state, answered and counted in
    /metrics; logging each with a traceback let any caller flood the error log (a 404, a 401
    or a 429 per request). Matched with isinstance: Litestar's own `disable_stack_trace` matches
    exact classes only, so NotFound or Conflict slipped past ServiceError."""
    exc = sys.exc_info()[1]
    status = getattr(exc, "status_code", None)
    refusal = (isinstance(exc, REFUSALS) and not isinstance(exc, Broken)) or (
        isinstance(status, int) and (status < 500 or status == 503))  # a redirect, a 4xx, a 503
    if exc is not None and not refusal:
        logger.exception("http.unhandled", error=type(exc).__name__, path_template=scope.get("path_template"))
