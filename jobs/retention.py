"""Job `retention` (daily, 00:00 UTC): the 13-month cap, aggregates kept, holds respected."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app.bootstrap import Container

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    container.outbox.drain()  # acknowledged events are in ClickHouse before it is read or deleted
    summary = container.retention.run(now).as_dict()
    log.info("job.finished", **summary)
    return summary
