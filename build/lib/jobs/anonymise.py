"""Job `anonymise`: hide every subject with a pending deletion request (every minute, and at
once after a request commits); immediate-mode requests are purged in the same run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app.bootstrap import Container

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    summary = container.erasure.anonymise(now).as_dict()
    log.info("job.finished", **summary)
    return summary
