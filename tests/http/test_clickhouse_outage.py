"""A ClickHouse server that does not answer (issue 11 §4, issue 9 §1): the service starts,
/readyz names what is down, webhook calls are still acknowledged (their events wait in the ingest
outbox, their operational effects are in SQL), SQL-only routes keep working, and once ClickHouse
answers again the drain moves every waiting event there, once. (The deferred ClickHouse migration
on the first successful connection needs a ClickHouse server, which this environment does not have.)"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, func, select

from app.bootstrap import Container
from app.config import Settings
from app.http.app import create_app
from app.models import Message
from app.services.policies import PolicyBook
from app.stores.clickhouse.client import ClickHouse
from jobs.registry import run_job
from tests.conftest import ROOT, FakeClock
from tests.fixtures.platform import frontend
from tests.http.conftest import bearer

NOBODY_LISTENS = "http://127.0.0.1:9/lethe"  # the discard port: connection refused


def test_a_clickhouse_outage_delays_analytics_only(settings: Settings, engine: Engine, clock: FakeClock,
                                                   clickhouse: ClickHouse) -> None:
    container = Container(settings=replace(settings, clickhouse_url=NOBODY_LISTENS), engine=engine,
                          policies=PolicyBook.load(ROOT / "policies"), clock=clock)
    container.migrate(outage_tolerated=True)  # what `lethe serve` does: SQL migrated, no traceback
    keys = container.accounts.create_project("partner-prod")
    events = [frontend("message_sent", "u-1", message_id="m-1", text="hi", room="r"),
              frontend("session_started", "u-1")]
    with TestClient(create_app(container)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["sql"] == "ok"
        assert ready.json()["clickhouse"].startswith("unavailable")
        answer: Any = client.post("/v1/events", json=events, headers=bearer(keys.webhook_token))
        assert answer.status_code == 202 and answer.json()["accepted"] == 2, answer.text
        assert client.get("/readyz").json()["outbox"]["events"] == 2
        assert run_job(container, "outbox", clock())["failed"] == 1  # the drain waits for ClickHouse
        with container.uow() as uow:  # the operational effect did not wait
            assert uow.session.scalar(select(func.count()).select_from(Message)) == 1
        created = client.post("/v1/deletion-requests", json={"user_id": "u-2"}, headers=bearer(keys.api_key))
        assert created.status_code == 202, created.text  # SQL-only work goes on
        again = client.post("/v1/events", json=events, headers=bearer(keys.webhook_token))
        assert again.json()["duplicates"] == 2  # the platform's retry has no second effect
    container.close()

    clickhouse.command("TRUNCATE TABLE events")
    recovered = Container(settings=settings, engine=engine, policies=PolicyBook.load(ROOT / "policies"),
                          clock=clock, clickhouse=clickhouse)  # ClickHouse answers again
    assert run_job(recovered, "outbox", clock())["processed"] == 2
    assert recovered.outbox.depth().events == 0
    rows = clickhouse.rows("SELECT event, count() FROM events GROUP BY event ORDER BY event")
    assert [tuple(r) for r in rows] == [("message_sent", 1), ("session_started", 1)]
