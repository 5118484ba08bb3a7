"""The ingest outbox (issue 9 §1): a webhook call is acknowledged once its events are in SQL;
the drain moves them into ClickHouse exactly once, also after a drain died half-way; a full
outbox answers 503 with Retry-After; erasure and holds see what still waits there."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import TestClient

from app.bootstrap import Container
from app.http.app import create_app
from app.ports import EventRow
from app.services.health import STALE_OUTBOX_SECONDS
from app.services.outbox import OutboxService
from app.stores.clickhouse.events import ClickHouseEventStore
from jobs.registry import run_job
from tests.conftest import FakeClock
from tests.fixtures.platform import frontend
from tests.http.conftest import bearer


@pytest.fixture
def quiet(container: Container) -> Container:
    """No drain after each call: the events stay in the outbox until a test drains it."""
    container.kick = lambda job: None
    return container


def post(client: TestClient[Any], keys: dict[str, str], body: Any) -> Any:
    return client.post("/v1/events", json=body, headers=bearer(keys["webhook_token"]))


def events_in_clickhouse(container: Container) -> tuple[int, int]:
    """(rows, distinct events) in ClickHouse."""
    count, distinct = container.clickhouse.rows("SELECT count(), uniqExact(dedup_key) FROM events")[0]
    return int(count), int(distinct)


def batch(n: int, start: int = 0, user: str = "u-1") -> list[dict[str, Any]]:
    return [frontend("message_sent", user, message_id=f"m-{i}", text=f"hello {i}", room="r-1")
            for i in range(start, start + n)]


class Dies:
    """An event store whose insert dies before or after ClickHouse took the block (a worker
    killed at that instant): the drain's claim stays behind in SQL."""

    def __init__(self, real: ClickHouseEventStore, after_insert: bool) -> None:
        self.real, self.after_insert = real, after_insert

    def insert(self, rows: Sequence[EventRow], dedup_token: str) -> None:
        if self.after_insert:
            self.real.insert(rows, dedup_token)
        raise KeyboardInterrupt("killed mid-drain")


def test_a_call_is_acknowledged_from_sql_and_drained_later(quiet: Container, client: TestClient[Any],
                                                          keys: dict[str, str], clock: FakeClock) -> None:
    answer = post(client, keys, batch(3))
    assert answer.status_code == 202 and answer.json()["accepted"] == 3
    assert events_in_clickhouse(quiet) == (0, 0)
    ready = client.get("/readyz").json()
    assert ready["outbox"]["events"] == 3
    clock.advance(seconds=7)
    assert client.get("/readyz").json()["outbox"]["oldest_age_seconds"] == 7.0
    metrics = client.get("/metrics").text
    assert "lethe_outbox_events 3.0" in metrics and "lethe_outbox_oldest_age_seconds 7.0" in metrics
    summary = run_job(quiet, "outbox", clock())
    assert summary["processed"] == 3 and summary["stores"] == {"clickhouse.events": 3}
    assert events_in_clickhouse(quiet) == (3, 3)
    assert quiet.outbox.depth().events == 0
    assert run_job(quiet, "outbox", clock())["processed"] == 0


def test_readiness_names_a_worker_that_drains_nothing(quiet: Container, client: TestClient[Any],
                                                      keys: dict[str, str], clock: FakeClock) -> None:
    """An API process whose embedded ClickHouse is the worker's cannot ask it; events waiting
    past STALE_OUTBOX_SECONDS say the worker is not draining (dead or stuck): 503, and why."""
    quiet.clickhouse_in_worker = True
    post(client, keys, batch(2))
    clock.advance(seconds=STALE_OUTBOX_SECONDS)
    assert client.get("/readyz").json()["clickhouse"] == "ok (owned by lethe worker)"
    clock.advance(seconds=1)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert ready.json()["clickhouse"] == ("unavailable: owned by lethe worker, which has not drained the "
                                          "outbox for 121 s (is it running?)")
    run_job(quiet, "outbox", clock())  # the worker is back
    assert client.get("/readyz").json() == {"status": "ok", "sql": "ok", "clickhouse": "ok (owned by lethe worker)",
                                            "outbox": {"events": 0, "oldest_age_seconds": 0.0}}


@pytest.mark.parametrize("after_insert", [False, True], ids=["before-insert", "after-insert"])
def test_a_drain_that_dies_is_redone_exactly_once(quiet: Container, client: TestClient[Any],
                                                  keys: dict[str, str], after_insert: bool) -> None:
    for i in range(4):
        assert post(client, keys, batch(5, start=5 * i)).json()["accepted"] == 5
    dying = OutboxService(quiet.uow, quiet.now, lambda: Dies(quiet.events, after_insert),  # type: ignore[arg-type, return-value]
                          max_events=1_000, block_events=10)
    with pytest.raises(KeyboardInterrupt):
        dying.drain()
    assert events_in_clickhouse(quiet) == ((10, 10) if after_insert else (0, 0))
    restarted = OutboxService(quiet.uow, quiet.now, lambda: quiet.events, max_events=1_000, block_events=10)
    assert restarted.drain() == 20  # the dead drain's block first (same token), then the rest
    assert events_in_clickhouse(quiet) == (20, 20)  # none lost, none doubled
    assert restarted.depth().events == 0


def test_two_drains_at_once_store_each_event_once(quiet: Container, client: TestClient[Any],
                                                  keys: dict[str, str]) -> None:
    for i in range(10):
        post(client, keys, batch(10, start=10 * i))
    drains = [OutboxService(quiet.uow, quiet.now, lambda: quiet.events, max_events=10_000, block_events=7)
              for _ in range(2)]  # as two processes would: each its own lock
    threads = [threading.Thread(target=d.drain) for d in drains]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drains[0].drain()  # whatever a lost claim race left
    assert events_in_clickhouse(quiet) == (100, 100)


def test_a_full_outbox_answers_503_with_retry_after_and_drops_nothing(quiet: Container, keys: dict[str, str],
                                                                       clock: FakeClock) -> None:
    quiet.settings = replace(quiet.settings, outbox_max_events=4)
    with TestClient(create_app(quiet)) as client:
        assert post(client, keys, batch(4)).status_code == 202
        full = post(client, keys, batch(1, start=4))
        assert full.status_code == 503, full.text
        assert int(full.headers["retry-after"]) >= 1 and "LETHE_OUTBOX_MAX_EVENTS" in full.json()["detail"]
        assert full.json()["detail"].startswith("4 events are waiting for ClickHouse, at least the limit of 4")
        assert quiet.outbox.depth().events == 4  # the refused call stored nothing
        run_job(quiet, "outbox", clock())
        again = post(client, keys, batch(1, start=4))
        assert again.status_code == 202 and again.json() == {"accepted": 1, "duplicates": 0, "rejected": [],
                                                            "suppressed": 0}
    run_job(quiet, "outbox", clock())
    assert events_in_clickhouse(quiet) == (5, 5)


def test_erasure_drains_first_so_waiting_events_are_erased_too(quiet: Container, client: TestClient[Any],
                                                               keys: dict[str, str], clock: FakeClock) -> None:
    post(client, keys, batch(3, user="gone") + batch(2, start=3, user="stays"))
    asked = client.post("/v1/deletion-requests", json={"user_id": "gone", "mode": "immediate"},
                        headers=bearer(keys["api_key"]))
    assert asked.status_code == 202
    summary = run_job(quiet, "anonymise", clock())
    assert summary["processed"] == 1
    assert quiet.outbox.depth().events == 0
    request = client.get(f"/v1/deletion-requests/{asked.json()['id']}", headers=bearer(keys["api_key"])).json()
    assert request["evidence"]["clickhouse.events"]["anonymised"] == 3  # the waiting events, made unreadable
    assert request["evidence"]["keys.analytics"]["anonymised"] == 1
    assert events_in_clickhouse(quiet) == (5, 5)  # the bystander's too, untouched
