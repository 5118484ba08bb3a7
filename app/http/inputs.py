"""What no route can accept, refused before routing: a path or query string that holds a NUL
character (no store can keep one: PostgreSQL text refuses it) or is not UTF-8 once
percent-decoded. User ids of any other character pass (CONTRACT §3)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.middleware import MiddlewareProtocol
from litestar.types import ASGIApp, Receive, Scope, Send

MAX_BODY = 10 * 1024 * 1024  # a request body: 1,000 events of ~10 KB each


class RefuseUnstorableInput(MiddlewareProtocol):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            raw_path = (scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")).split(b"?", 1)[0]
            problem = unstorable("the path", raw_path) or unstorable("the query string",
                                                                     scope.get("query_string", b""))
            if problem:
                raise ClientException(problem)
        await self.app(scope, receive, send)


def unstorable(where: str, raw: bytes) -> str | None:
    """Why a percent-encoded URL part cannot be taken, if it cannot."""
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        return f"{where} contains a NUL character (%00), which no id or filter may hold"
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return f"{where} is not valid UTF-8 once percent-decoded"
    return None


def raw_segments(scope: Any, prefix: str) -> list[str]:
    """The path's segments after `prefix`, each percent-decoded on its own. The router sees
    `%2F` already decoded into a separator; a user id (base64 with `/`) must not be split."""
    raw = scope["raw_path"].decode("ascii", errors="replace").split("?", 1)[0]
    return [unquote(segment) for segment in raw.removeprefix(prefix).split("/")]
