"""/metrics beyond HTTP (issue 8): events by outcome, job runs, requests by status and overdue,
the audit chain's state; nothing about a user."""

from __future__ import annotations

import math
import re
from typing import Any

from litestar.testing import TestClient

from app import observability
from app.bootstrap import Container
from jobs.registry import run_job
from jobs.scheduler import Scheduler
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT, frontend
from tests.http.conftest import bearer


def value(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_report_events_jobs_requests_and_the_audit_chain(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock
) -> None:
    before = client.get("/metrics").text
    sent = frontend("message_sent", "u-secret-77", text="hi", message_id="m-1", room="r")
    bad = frontend("message_sent", "u-2", message_id="m" * 300)
    client.post("/v1/events", json=[sent, sent, bad], headers=bearer(keys["webhook_token"]))
    client.post("/v1/deletion-requests", json={"user_id": "u-9"}, headers=bearer(keys["api_key"]))
    clock.advance(days=40)  # the request is past its one-month deadline, still pending
    run_job(container, "audit_verify", clock.now)

    text = client.get("/metrics").text
    for outcome, delta in (("accepted", 1), ("duplicate", 1), ("rejected", 1)):
        grew = value(text, "lethe_events_total", project=PROJECT, outcome=outcome) - value(
            before, "lethe_events_total", project=PROJECT, outcome=outcome)
        assert grew == delta, outcome
    assert value(text, "lethe_deletion_requests", status="pending") == 1
    assert value(text, "lethe_deletion_requests_overdue") == 1
    assert value(text, "lethe_deletion_requests_oldest_pending_age_seconds") == 40 * 86_400
    assert value(text, "lethe_audit_chain_ok") == 1 and value(text, "lethe_audit_chain_entries") >= 2
    assert value(text, "lethe_job_runs_total", job="audit_verify", result="ok") >= 1
    assert value(text, "lethe_job_last_run_timestamp_seconds", job="audit_verify") == clock.now.timestamp()
    assert "u-secret-77" not in text and "u-9" not in text


def test_a_restarted_worker_reports_the_last_recorded_verification_not_a_broken_chain(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock
) -> None:
    """The chain gauge is NaN (no alert on `== 0`) until a verification is known, and a new
    scheduler starts from the last one recorded in SQL rather than waiting for the nightly run."""
    client.post("/v1/deletion-requests", json={"user_id": "u-9"}, headers=bearer(keys["api_key"]))
    observability.AUDIT_CHAIN_OK.set(float("nan"))  # as in a process that has verified nothing
    observability.AUDIT_CHAIN_ENTRIES.set(float("nan"))
    assert math.isnan(value(client.get("/metrics").text, "lethe_audit_chain_ok"))
    run_job(container, "audit_verify", clock.now)
    entries = value(client.get("/metrics").text, "lethe_audit_chain_entries")
    observability.AUDIT_CHAIN_OK.set(float("nan"))  # the worker restarts...
    Scheduler(container)  # ...and its scheduler is built (not started: no job runs)
    text = client.get("/metrics").text
    assert value(text, "lethe_audit_chain_ok") == 1 and value(text, "lethe_audit_chain_entries") == entries >= 1
