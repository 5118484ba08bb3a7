"""Partners' back-office metrics (issue 8, CONTRACT §3): the daily aggregates the retention
job computes at 00:00 UTC, served per project for a range of days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from app.bootstrap import Container
from tests.conftest import FakeClock
from tests.fixtures.platform import frontend
from tests.http.conftest import bearer
from tests.http.test_lifecycle_jobs import deliver_as_sent, iso


def test_daily_metrics_are_served_per_project_and_range(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container, clock: FakeClock) -> None:
    clock.now = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    day1, day2 = clock.now - timedelta(days=2), clock.now - timedelta(days=1)
    deliver_as_sent(client, keys, clock, [
        frontend("session_started", "u-a", created_at=iso(day1 + timedelta(hours=9))),
        frontend("session_started", "u-b", created_at=iso(day1 + timedelta(hours=10))),
        frontend("message_sent", "u-a", text="hi", message_id="m-1", room="r",
                 created_at=iso(day1 + timedelta(hours=11))),
        frontend("session_started", "u-a", created_at=iso(day2 + timedelta(hours=9))),
    ])
    container.retention.run(clock.now)  # what 00:00 UTC does: every finished day is aggregated

    answer = client.get("/v1/metrics/daily", params={"since": day1.date().isoformat(),
                                                     "until": day2.date().isoformat()},
                        headers=bearer(keys["api_key"]))
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(i["day"], i["dau"], i["messages"], i["events"]) for i in items] == [
        (day1.date().isoformat(), 2, 1, 3), (day2.date().isoformat(), 1, 0, 1)]
    assert items[1]["wau"] == 2 and items[1]["mau"] == 2  # u-b counts in the week and the month
    by_default = client.get("/v1/metrics/daily", headers=bearer(keys["api_key"])).json()["items"]
    assert [i["day"] for i in by_default] == [day1.date().isoformat(), day2.date().isoformat()]

    other = container.accounts.create_project("other")
    assert client.get("/v1/metrics/daily", headers=bearer(other.api_key)).json() == {"items": []}
    backwards = client.get("/v1/metrics/daily", params={"since": "2026-03-09", "until": "2026-03-01"},
                           headers=bearer(keys["api_key"]))
    assert backwards.status_code == 400 and "since" in backwards.json()["detail"]
    out_of_range = client.get("/v1/metrics/daily", params={"until": "0001-01-01"}, headers=bearer(keys["api_key"]))
    assert out_of_range.status_code == 400 and "until: must be between" in out_of_range.json()["detail"]
    assert client.get("/v1/metrics/daily", params={"since": "yesterday"},
                      headers=bearer(keys["api_key"])).status_code == 400
    assert client.get("/v1/metrics/daily", headers=bearer(keys["officer"])).status_code == 403
