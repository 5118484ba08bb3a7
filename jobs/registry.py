"""The jobs Lethe runs, by name, and `run_job`, the one way to run one (scheduler and CLI)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from app import observability
from app.bootstrap import Container
from jobs import anonymise, audit_verify, callbacks, message_feed, offboarding, outbox, purge, retention

JobFn = Callable[[Container, datetime], dict[str, Any]]

# In the order `lethe jobs run all` runs them (CONTRACT §2). The jobs that read or erase events
# (anonymise, purge, retention, offboarding) drain the outbox first themselves.
JOBS: dict[str, JobFn] = {
    "anonymise": anonymise.run,
    "purge": purge.run,
    "retention": retention.run,
    "message_feed": message_feed.run,
    "offboarding": offboarding.run,
    "audit_verify": audit_verify.run,
    "callbacks": callbacks.run,
    "outbox": outbox.run,
}


# Jobs that run every second (and after each webhook call): their runs are not recorded in SQL,
# which would gain rows by the second. /metrics counts what they moved and when they last ran
# (the worker's liveness check reads it).
FREQUENT = frozenset({"outbox"})


def run_job(container: Container, name: str, now: datetime) -> dict[str, Any]:
    """Run job `name` as of `now` and record the run (its summary holds counts only)."""
    started = container.now()
    summary = JOBS[name](container, now)
    finished = container.now()
    if name in FREQUENT:
        observability.job_finished(name, summary, finished.timestamp())
        return summary
    with container.uow() as uow:
        uow.job_runs.record(name, as_of=now, started_at=started, finished_at=finished, summary=summary)
        uow.commit()
    observability.job_finished(name, summary, finished.timestamp())
    return summary


def last_runs(container: Container) -> dict[str, dict[str, Any] | None]:
    with container.uow() as uow:
        runs = {name: uow.job_runs.last(name) for name in JOBS}
        return {name: None if run is None else {"finished_at": run.finished_at.isoformat(), "ok": run.ok,
                                                "summary": run.summary}
                for name, run in runs.items()}
