"""Job `audit_verify`: walk the audit chain daily; a break is logged as an error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from app import observability
from app.bootstrap import Container

log = structlog.get_logger(__name__)


def run(container: Container, now: datetime) -> dict[str, Any]:
    result = container.audit.verify()
    observability.audit_verified(result.ok, result.entries)
    # a signed head kept outside the database, every 1,000 entries or hour (only over an intact chain)
    checkpoint = container.audit.checkpoint_if_due(container.now()) if result.ok else None
    summary = {"job": "audit_verify", "now": now.isoformat(), "processed": result.entries, "held": 0,
               "failed": 0 if result.ok else 1, "ok": result.ok, "head": result.head,
               "first_bad_seq": result.first_bad_seq, "problem": result.problem,
               "checkpoint": checkpoint["seq"] if checkpoint else None}
    (log.info if result.ok else log.error)("job.finished", **summary)
    return summary
