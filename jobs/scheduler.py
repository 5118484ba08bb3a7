"""APScheduler 3 inside `lethe serve` (unless LETHE_SCHEDULER=off) and `lethe worker`.

Each process keeps its own in-memory schedule (APScheduler 3 cannot share a job store between
processes); exactly-once comes from the services claiming work in SQL. Stable ids with
replace_existing, coalesce, max_instances=1, and a misfire grace time (the default of 1 s
silently skips runs on a busy machine).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from app.bootstrap import Container
from jobs.registry import JOBS, last_runs, report_last_audit_verification, run_job

log = structlog.get_logger(__name__)

KICK_DELAY = 0.2  # seconds: a burst of requests is anonymised in one batch, still within a second
# How often the scheduler looks for requests waiting for their anonymisation. In `lethe serve`
# a request kicks the job itself; API processes beside `lethe worker` (or `serve --workers N`)
# cannot reach the worker's scheduler, and `pending` must last seconds, not the job's minute.
PENDING_WATCH_SECONDS = 2.0


@dataclass
class _Runner:
    """Runs a job as of the current time; a kick during a run makes it run once more right
    after, so a request committed while a run is under way never waits for the next interval."""

    container: Container
    name: str

    def __post_init__(self) -> None:
        self.kicked = threading.Event()
        self.last: dict[str, Any] | None = None

    def __call__(self) -> None:
        while True:
            self.kicked.clear()
            try:
                self.last = run_job(self.container, self.name, self.container.now())
            except Exception:
                log.exception("job.crashed", job=self.name)
                self.kicked.clear()  # the periodic run tries again
                return
            if not self.kicked.is_set():
                return
            time.sleep(KICK_DELAY)


class Scheduler:
    def __init__(self, container: Container) -> None:
        # APScheduler logs every run at INFO ("Running job..."): with the outbox drain every second
        # that drowns the log. Jobs log their own summaries; APScheduler's warnings still show.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._runners = {name: _Runner(container, name) for name in JOBS}
        for name, runner in self._runners.items():
            self._scheduler.add_job(runner, JOBS[name].trigger, id=name, name=name, replace_existing=True,
                                    coalesce=True, max_instances=1, misfire_grace_time=300)
        try:
            report_last_audit_verification(container)
        except Exception as exc:  # SQL down at start: /metrics says NaN until the next verification
            log.warning("scheduler.audit_state_unknown", error=type(exc).__name__)
        self._container = container
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch_pending, name="pending-requests-watch", daemon=True)
        self.watch_seconds = PENDING_WATCH_SECONDS

    def start(self) -> None:
        self._scheduler.start()
        self._watcher.start()

    def shutdown(self) -> None:
        self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self._scheduler.shutdown(wait=True)

    def _watch_pending(self) -> None:
        """Kick anonymise whenever a request waits for it (one indexed query every few seconds),
        whichever process took the request."""
        while not self._stopping.wait(self.watch_seconds):
            try:
                with self._container.uow() as uow:
                    waiting = uow.requests.oldest_pending() is not None
            except Exception as exc:  # the database is down: /readyz says so; try again next time
                log.warning("scheduler.pending_watch_failed", error=type(exc).__name__)
                continue
            if waiting:
                self.kick("anonymise")

    def kick(self, job: str) -> None:
        """Run `job` as soon as possible (thread-safe; cheap enough to call per request)."""
        runner = self._runners.get(job)
        if runner is None or not self._scheduler.running:
            return
        if runner.kicked.is_set():
            return  # a run is already due: this kick rides along
        runner.kicked.set()
        self._scheduler.modify_job(job, next_run_time=datetime.now(UTC) + timedelta(seconds=KICK_DELAY))



def describe(container: Container) -> list[dict[str, Any]]:
    """The schedule and each job's last recorded run (from any process), for `lethe jobs list`."""
    last = last_runs(container)
    return [{"job": name, "trigger": str(JOBS[name].trigger), "last_run": last[name]} for name in JOBS]
