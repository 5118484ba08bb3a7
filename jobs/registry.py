"""The one job table: every job Lethe runs, what it calls and when. The scheduler, the CLI
(`lethe jobs run|list`) and `run_job` all read `JOBS`.

A job is a thin wrapper: it calls one service and logs the summary. Every event a webhook call
acknowledged is in ClickHouse before a job reads or deletes events: retention and offboarding
drain the ingest outbox first, and each erasure run does (app.bootstrap, before each run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from app import observability
from app.bootstrap import Container
from app.services.key_compaction import COMPACT_EVERY_SECONDS
from app.services.summary import JobSummary

log = structlog.get_logger(__name__)

JobFn = Callable[[Container, datetime], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    run: JobFn
    trigger: BaseTrigger
    # runs every second (and after each webhook call): its runs are not recorded in SQL, which
    # would gain rows by the second; /metrics counts what it moved and when it last ran
    frequent: bool = False


def _service(call: Callable[[Container, datetime], JobSummary], *, drain_first: bool = False) -> JobFn:
    """A job that calls one service method and logs its summary."""
    def run(container: Container, now: datetime) -> dict[str, Any]:
        if drain_first:
            container.outbox.drain()
        summary = call(container, now).as_dict()
        log.info("job.finished", **summary)
        return summary

    return run


def _outbox(container: Container, now: datetime) -> dict[str, Any]:
    """Move the events webhook calls left in the ingest outbox into ClickHouse."""
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


def _key_compaction(container: Container, now: datetime) -> dict[str, Any]:
    """Destroyed (and re-wrapped) key rows leave the key table's files: SQLite's checkpoint,
    PostgreSQL's VACUUM FULL when the table changed since the last one (app.services.key_compaction)."""
    summary = JobSummary("key_compaction", now)
    outcome = container.keys.compaction.if_changed()
    summary.processed, summary.failed = int(outcome == "compacted"), int(outcome == "postponed")
    log.info("job.finished", outcome=outcome, **summary.as_dict())
    return {**summary.as_dict(), "outcome": outcome}


def _audit_verify(container: Container, now: datetime) -> dict[str, Any]:
    """Walk the audit chain; a break is logged as an error. Over an intact chain, keep a signed
    head outside the database every 1,000 entries or hour."""
    result = container.audit.verify()  # sets /metrics' chain state too
    checkpoint = container.audit.checkpoint_if_due(container.now()) if result.ok else None
    summary = {"job": "audit_verify", "now": now.isoformat(), "processed": result.entries, "held": 0,
               "failed": 0 if result.ok else 1, "ok": result.ok, "head": result.head,
               "first_bad_seq": result.first_bad_seq, "problem": result.problem,
               "checkpoint": checkpoint["seq"] if checkpoint else None}
    (log.info if result.ok else log.error)("job.finished", **summary)
    return summary


# In the order `lethe jobs run all` runs them (CONTRACT §2).
JOBS: dict[str, Job] = {job.name: job for job in (
    # hide every subject with a pending request (and at once after a request commits);
    # immediate-mode requests are purged in the same run
    Job("anonymise", _service(lambda c, now: c.erasure.anonymise(now)),
        IntervalTrigger(minutes=1, timezone=UTC)),
    # after grace: delete the subject's personal rows and destroy the link
    Job("purge", _service(lambda c, now: c.erasure.purge(now)),
        IntervalTrigger(minutes=15, timezone=UTC)),
    # the 13-month cap, aggregates kept, holds respected (the platform's daily sync time)
    Job("retention", _service(lambda c, now: c.retention.run(now), drain_first=True),
        CronTrigger(hour=0, minute=0, timezone=UTC)),
    # deleted messages leave the admin feed after the policy's days
    Job("message_feed", _service(lambda c, now: c.message_feed.run(now)), IntervalTrigger(hours=1, timezone=UTC)),
    # the data of ended partnerships, except held data
    Job("offboarding", _service(lambda c, now: c.offboarding.run(now), drain_first=True),
        IntervalTrigger(minutes=15, timezone=UTC)),
    Job("audit_verify", _audit_verify, CronTrigger(hour=3, minute=0, timezone=UTC)),
    # POST due completion callbacks to partners, retrying with backoff
    Job("callbacks", _service(lambda c, now: c.callbacks.deliver(now)), IntervalTrigger(seconds=10, timezone=UTC)),
    # webhook calls kick it sooner (`lethe serve`)
    Job("outbox", _outbox, IntervalTrigger(seconds=1, timezone=UTC), frequent=True),
    # what any process destroyed leaves the key table's files (PostgreSQL: VACUUM FULL, off the
    # erasure runs' path; SQLite also checkpoints after each erasure run)
    Job("key_compaction", _key_compaction, IntervalTrigger(seconds=COMPACT_EVERY_SECONDS, timezone=UTC)),
)}


def run_job(container: Container, name: str, now: datetime) -> dict[str, Any]:
    """Run job `name` as of `now` and record the run (its summary holds counts only)."""
    job = JOBS[name]
    started = container.now()
    summary = job.run(container, now)
    finished = container.now()
    if not job.frequent:
        with container.uow() as uow:
            uow.job_runs.record(name, as_of=now, started_at=started, finished_at=finished, summary=summary)
            uow.commit()
    observability.job_finished(name, summary, finished.timestamp())
    return summary


def report_last_audit_verification(container: Container) -> None:
    """/metrics' chain state from the last recorded `audit_verify` run (any process), so that a
    restarted worker does not report nothing, or a broken chain, until the nightly run."""
    with container.uow() as uow:
        run = uow.job_runs.last("audit_verify")
    if run is not None and isinstance(run.summary.get("ok"), bool):
        observability.audit_verified(run.summary["ok"], int(run.summary.get("processed") or 0))


def last_runs(container: Container) -> dict[str, dict[str, Any] | None]:
    with container.uow() as uow:
        runs = {name: uow.job_runs.last(name) for name in JOBS}
        return {name: None if run is None else {"finished_at": run.finished_at.isoformat(), "ok": run.ok,
                                                "summary": run.summary}
                for name, run in runs.items()}
