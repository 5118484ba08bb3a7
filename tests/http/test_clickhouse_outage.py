"""A ClickHouse server that does not answer (issue 11 §4): the service starts, /readyz names
what is down, events get 503 with Retry-After (never 500, nothing half-stored), and the
SQL-only routes keep working. (The deferred ClickHouse migration on the first successful
connection needs a ClickHouse server, which this test environment does not have.)"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, func, select

from app.bootstrap import Container
from app.config import Settings
from app.http.app import create_app
from app.services.policies import PolicyBook
from app.stores.sql.models import DeadLetter, EventReceipt, Message
from tests.conftest import ROOT, FakeClock
from tests.fixtures.platform import frontend
from tests.http.conftest import bearer

NOBODY_LISTENS = "http://127.0.0.1:9/lethe"  # the discard port: connection refused


def test_a_clickhouse_outage_is_503_and_stores_nothing_by_half(settings: Settings, engine: Engine,
                                                                clock: FakeClock) -> None:
    container = Container(settings=replace(settings, clickhouse_url=NOBODY_LISTENS), engine=engine,
                          policies=PolicyBook.load(ROOT / "policies"), clock=clock)
    container.migrate(outage_tolerated=True)  # what `lethe serve` does: SQL migrated, no traceback
    keys = container.accounts.create_project("partner-prod")
    with TestClient(create_app(container)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["sql"] == "ok"
        assert ready.json()["clickhouse"].startswith("unavailable")
        event = frontend("message_sent", "u-1", message_id="m-1", text="hi", room="r")
        answer: Any = client.post("/v1/events", json=event, headers=bearer(keys["webhook_token"]))
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) >= 1 and "unavailable" in answer.json()["detail"]
        with container.uow() as uow:  # nothing by half: the platform's retry will store it whole
            for table in (Message, EventReceipt, DeadLetter):
                assert uow.session.scalar(select(func.count()).select_from(table)) == 0
        created = client.post("/v1/deletion-requests", json={"user_id": "u-2"}, headers=bearer(keys["api_key"]))
        assert created.status_code == 202, created.text  # SQL-only work goes on
    container.close()
