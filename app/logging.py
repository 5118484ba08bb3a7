"""structlog for the API, jobs and CLI: JSON lines, UTC timestamps, and no personal data.

`drop_personal_fields` removes any key that could carry personal data before an event is
rendered, however deeply it is nested, so a careless `log.info(..., user_id=...)` cannot leak.
Request logging that would print paths or query strings (which can name a user) is off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

PERSONAL_KEYS = frozenset({
    "user_id", "external_user_id", "decrypted_user_id", "user_name", "nickname", "name", "display_name",
    "text", "content", "ip", "email", "reason", "url", "avatar_url", "source_url", "user_agent",
    "platformUserAgent", "body", "payload", "value", "headers", "query", "path_params", "token",
    "api_key", "webhook_token", "authorization", "cookies", "path",
    "webhook_secret", "webhook_url_path", "secret", "webhook-signature",
})
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, MutableMapping):
        return {k: REDACTED if k in PERSONAL_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def drop_personal_fields(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in PERSONAL_KEYS:
            event_dict[key] = REDACTED
        elif key != "event":
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def stderr_logger(*_: Any) -> structlog.PrintLogger:
    """Writes to sys.stderr as it is when the logger is made, not when logging was configured."""
    return structlog.PrintLogger(sys.stderr)


def bound_logger(level: str) -> type[structlog.typing.FilteringBoundLogger]:
    return structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])


def processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_personal_fields,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]


def configure_logging(level: str = "info") -> None:
    """For the CLI and workers (the HTTP app configures the same chain via Litestar's plugin).
    `level` is LETHE_LOG_LEVEL: debug, info, warning or error."""
    structlog.configure(
        processors=processors(),
        wrapper_class=bound_logger(level),
        logger_factory=stderr_logger,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # a ClickHouse server that does not answer: Lethe says so in one line of its own (the CLI,
    # /readyz, the outbox's warnings); the HTTP client's retry notices only repeat it
    for noisy in ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
