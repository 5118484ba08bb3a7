"""What `/metrics` reports beyond HTTP (Prometheus, the process's default registry): webhook
events by outcome, job runs, deletion requests by status and overdue (read from SQL when
scraped), and the audit chain's state as the last verification found it. Labels carry project
and job names only, never anything about a user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.ports import Clock, UnitOfWorkFactory

log = structlog.get_logger(__name__)

EVENTS = Counter("lethe_events", "Webhook envelopes by outcome (accepted, duplicate, suppressed, rejected)",
                 ["project", "outcome"])
JOB_RUNS = Counter("lethe_job_runs", "Job runs by job and result (ok, failed)", ["job", "result"])
JOB_PROCESSED = Counter("lethe_job_processed", "Items a job moved on (requests, rows...)", ["job"])
JOB_HELD = Counter("lethe_job_held", "Items a job left alone because a hold covers them", ["job"])
JOB_LAST_RUN = Gauge("lethe_job_last_run_timestamp_seconds", "When each job last finished (Unix time)", ["job"])
AUDIT_CHAIN_OK = Gauge("lethe_audit_chain_ok", "1 if the last audit verification found the chain intact, 0 if "
                       "broken, NaN while no verification is known (an alert on == 0 does not fire on NaN)")
AUDIT_CHAIN_ENTRIES = Gauge("lethe_audit_chain_entries", "Entries in the audit chain at the last verification")
# not 0 ("broken") before the first verification: the scheduler starts from the last recorded one
AUDIT_CHAIN_OK.set(float("nan"))
AUDIT_CHAIN_ENTRIES.set(float("nan"))


def job_finished(job: str, summary: dict[str, Any], finished_unix: float) -> None:
    JOB_RUNS.labels(job, "failed" if summary.get("failed") else "ok").inc()
    JOB_PROCESSED.labels(job).inc(int(summary.get("processed") or 0))
    JOB_HELD.labels(job).inc(int(summary.get("held") or 0))
    JOB_LAST_RUN.labels(job).set(finished_unix)


def audit_verified(ok: bool, entries: int) -> None:
    AUDIT_CHAIN_OK.set(1 if ok else 0)
    AUDIT_CHAIN_ENTRIES.set(entries)


class RequestCensus(Collector):
    """Deletion requests by status and overdue, counted in SQL at each scrape."""

    def __init__(self) -> None:
        self._source: tuple[UnitOfWorkFactory, Clock] | None = None

    def watch(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._source = (uow, clock)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._source is None:
            return
        uow_factory, clock = self._source
        try:
            with uow_factory() as uow:
                now = clock()
                by_status, overdue = uow.requests.census(now)
                dead_callbacks = uow.callbacks.dead_count()
                oldest = uow.requests.oldest_pending()
                outbox_events, outbox_oldest = uow.outbox.depth()
        except Exception as exc:  # a scrape reports what it can; /readyz says what is down
            log.warning("metrics.census_failed", error=type(exc).__name__)
            return
        family = GaugeMetricFamily("lethe_deletion_requests", "Deletion requests by status", labels=["status"])
        for status, count in sorted(by_status.items()):
            family.add_metric([status], count)
        yield family
        yield GaugeMetricFamily("lethe_deletion_requests_overdue",
                                "Open deletion requests past their Art. 12(3) deadline", value=overdue)
        yield GaugeMetricFamily("lethe_deletion_requests_oldest_pending_age_seconds",
                                "Age of the oldest request waiting for its anonymisation (0: none waits); "
                                "growing means the anonymise job is not running",
                                value=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        yield GaugeMetricFamily("lethe_outbox_events", "Acknowledged events waiting in the ingest outbox",
                                value=outbox_events)
        yield GaugeMetricFamily("lethe_outbox_oldest_age_seconds",
                                "Age of the oldest entry in the ingest outbox (0: empty); growing means the "
                                "worker is not draining it (stopped, or ClickHouse down)",
                                value=max((now - outbox_oldest).total_seconds(), 0.0) if outbox_oldest else 0.0)
        yield GaugeMetricFamily("lethe_callbacks_dead",
                                "Completion callbacks given up after 3 days of failed deliveries", value=dead_callbacks)


REQUEST_CENSUS = RequestCensus()
REGISTRY.register(REQUEST_CENSUS)
