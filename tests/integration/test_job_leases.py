"""Job leases (issue 11 §7): short, renewed by a live run, taken over from a killed one within
a minute; a run that finds due work leased elsewhere says by whom and until when."""

from __future__ import annotations

import time
from datetime import timedelta

from app.bootstrap import Container
from app.domain.requests import Step
from app.models import DeletionRequest
from app.services.erasure import LEASE, RUNNER
from tests.conftest import FakeClock
from tests.fixtures.interleave import erasure_with
from tests.integration.test_deletion_requests import pid, request


def lease_of(container: Container, request_id: str) -> tuple[str | None, object]:
    with container.uow() as uow:
        row = uow.session.get(DeletionRequest, request_id)
        assert row is not None
        return row.leased_by, row.lease_until


def test_a_killed_runs_requests_are_taken_over_within_a_minute(container: Container, project: dict[str, str],
                                                                clock: FakeClock) -> None:
    created = request(container, "u-1").body
    with container.uow() as uow:  # a run claims, then is killed (-9): nothing releases its lease
        uow.requests.claim(Step.ANONYMISE, clock.now, clock.now, LEASE, 10, runner="worker-7:4242")
        uow.commit()
    blocked = container.erasure.anonymise(clock.now)
    assert blocked.processed == 0
    assert blocked.as_dict()["leased_elsewhere"] == [
        {"by": "worker-7:4242", "until": (clock.now + LEASE).isoformat(), "requests": 1}]
    clock.advance(seconds=LEASE.total_seconds() + 1)
    taken_over = container.erasure.anonymise(clock.now)
    assert taken_over.processed == 1 and "leased_elsewhere" not in taken_over.as_dict()
    assert container.deletions.get(pid(container), created.id).status == "in_grace"


def test_a_live_run_renews_its_leases_so_no_one_takes_its_batch(container: Container, project: dict[str, str],
                                                                 clock: FakeClock) -> None:
    created = request(container, "u-1").body
    seen: dict[str, object] = {}

    def meanwhile() -> None:  # the run is inside its batch: its leases would have expired twice over
        clock.advance(seconds=2 * LEASE.total_seconds())
        time.sleep(0.3)  # several heartbeats
        seen["lease"] = lease_of(container, created.id)
        seen["other"] = container.erasure.anonymise(clock.now).as_dict()

    slow = erasure_with(container, meanwhile)
    slow.heartbeat = timedelta(milliseconds=20)
    summary = slow.anonymise(clock.now)
    by, until = seen["lease"]  # type: ignore[misc]
    assert by == RUNNER and until > clock.now  # type: ignore[operator]
    other = seen["other"]
    assert other["processed"] == 0 and other["leased_elsewhere"][0]["by"] == RUNNER  # type: ignore[index]
    assert summary.processed == 1
    assert lease_of(container, created.id)[1] is None  # released when the step committed
