"""The scheduler in the process that owns the jobs (`lethe serve`, `lethe worker`)."""

from __future__ import annotations

import time

from app.bootstrap import Container
from app.domain.requests import Mode
from jobs.scheduler import Scheduler


def test_a_request_taken_by_another_process_is_anonymised_within_seconds(container: Container,
                                                                         project: dict[str, str]) -> None:
    """An API process beside `lethe worker` cannot kick the worker's anonymise job (its interval
    is a minute): the worker's scheduler finds the waiting request itself."""
    with container.uow() as uow:
        project_id = uow.projects.by_name("acme").id  # type: ignore[union-attr]
    # no kick reaches a scheduler here (the fixture's kick drains the outbox only)
    made = container.deletions.request(project_id, "u-1", Mode.GRACE, None, actor="partner:acme").body
    scheduler = Scheduler(container)
    scheduler.watch_seconds = 0.1
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with container.uow() as uow:
                status = uow.requests.get(project_id, made.id).status  # type: ignore[union-attr]
            if status != "pending":
                break
            time.sleep(0.1)
    finally:
        scheduler.shutdown()
    assert status == "in_grace"
