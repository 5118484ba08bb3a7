"""Job `outbox` (every second in `lethe worker`, and in `lethe serve` with its scheduler on):
move the events webhook calls left in the ingest outbox into ClickHouse."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app.bootstrap import Container
from app.services.summary import JobSummary

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    summary = JobSummary("outbox", now)
    try:
        summary.processed = container.outbox.drain()
    except Exception as exc:  # ClickHouse down or refusing: the events wait in SQL, nothing is lost
        log.warning("outbox.drain_failed", error=type(exc).__name__)
        summary.failed = 1
        return summary.as_dict()
    if summary.processed:
        summary.stores["clickhouse.events"] = summary.processed
        log.info("job.finished", **summary.as_dict())
    return summary.as_dict()
