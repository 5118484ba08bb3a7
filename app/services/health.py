"""Readiness: whether both stores answer, and what waits in the ingest outbox (`GET /readyz`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.services.outbox import OutboxDepth, OutboxService

# Where ClickHouse is the worker's (the embedded engine), this process cannot ask it; the outbox
# tells instead: the worker drains it every second, so events waiting longer than this mean the
# worker is not running (or stuck), and ClickHouse is not receiving anything.
STALE_OUTBOX_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, str]  # store -> "ok…" or "unavailable: <error type>"
    outbox: OutboxDepth | None  # None when SQL does not answer

    @property
    def ok(self) -> bool:
        return all(v.startswith("ok") for v in self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ok else "unavailable", **self.checks}
        if self.outbox is not None:  # events acknowledged but not yet in ClickHouse
            body["outbox"] = self.outbox.as_dict()
        return body


class HealthService:
    def __init__(self, sql_ping: Callable[[], object], clickhouse_ping: Callable[[], bool],
                 clickhouse_in_worker: Callable[[], bool], outbox: OutboxService) -> None:
        self._sql_ping = sql_ping
        self._clickhouse_ping = clickhouse_ping
        self._clickhouse_in_worker = clickhouse_in_worker
        self._outbox = outbox

    def readiness(self) -> Readiness:
        """Reports, never raises: a store that fails is named with the type of its error."""
        checks: dict[str, str] = {}
        try:
            self._sql_ping()
            checks["sql"] = "ok"
        except Exception as exc:
            checks["sql"] = f"unavailable: {type(exc).__name__}"
        outbox = self._outbox.depth() if checks["sql"] == "ok" else None
        if self._clickhouse_in_worker():  # not this process's to open: the worker drains the outbox into it
            checks["clickhouse"] = _worker_side(outbox)
        else:
            try:
                checks["clickhouse"] = "ok" if self._clickhouse_ping() else "unavailable"
            except Exception as exc:
                checks["clickhouse"] = f"unavailable: {type(exc).__name__}"
        return Readiness(checks, outbox)


def _worker_side(outbox: OutboxDepth | None) -> str:
    if outbox is not None and outbox.oldest_age_seconds > STALE_OUTBOX_SECONDS:
        return (f"unavailable: owned by lethe worker, which has not drained the outbox for "
                f"{outbox.oldest_age_seconds:.0f} s (is it running?)")
    return "ok (owned by lethe worker)"
