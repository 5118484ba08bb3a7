"""Job `purge`: after grace, delete the subject's personal rows and destroy the link."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app.bootstrap import Container

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    summary = container.erasure.purge(now).as_dict()
    log.info("job.finished", **summary)
    return summary
