"""Job `offboarding`: delete the data of ended partnerships, except held data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app.bootstrap import Container

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    container.outbox.drain()  # acknowledged events are in ClickHouse before it is read or deleted
    summary = container.offboarding.run(now).as_dict()
    log.info("job.finished", **summary)
    return summary
