"""Job `callbacks`: POST due completion callbacks to partners (every 10 s), retrying with backoff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app.bootstrap import Container

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    summary = container.callbacks.deliver(now).as_dict()
    log.info("job.finished", **summary)
    return summary
