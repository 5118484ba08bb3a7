"""Suppression after erasure (issue 12, CONTRACT "Suppression"): a purged user's late events
are dropped and counted, for the policy's days, and a partner can end it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from litestar.testing import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.bootstrap import Container
from app.models import Subject, Suppression
from jobs.registry import run_job
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import ch_rows

USER = "BUmX/xFy+NM=="  # base64, with "/" "+" "="


def erase(client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
          user: str = USER) -> None:
    created = client.post("/v1/deletion-requests", json={"user_id": user, "mode": "immediate"},
                          headers=bearer(keys["api_key"]))
    assert created.status_code == 202, created.text
    container.erasure.anonymise(clock.now)
    done = client.get(f"/v1/deletion-requests/{created.json()['id']}", headers=bearer(keys["api_key"])).json()
    assert done["status"] == "completed"


def late_event(user: str = USER) -> dict[str, Any]:
    return frontend("session_started", user)


def test_a_purged_users_late_events_are_dropped_and_counted(client: TestClient[Any], keys: dict[str, str],
                                                           container: Container, clock: FakeClock) -> None:
    erase(client, keys, container, clock)
    before = len(ch_rows(container))
    counted = REGISTRY.get_sample_value("lethe_events_total", {"project": PROJECT, "outcome": "suppressed"}) or 0
    answer = client.post("/v1/events", json=[late_event(), late_event("someone-else")],
                         headers=bearer(keys["webhook_token"])).json()
    assert answer == {"accepted": 2, "duplicates": 0, "rejected": [], "suppressed": 1}
    assert len(ch_rows(container)) == before + 1  # only the other user's event
    with container.uow() as uow:
        assert container.identities.find(uow, uow.projects.by_name(PROJECT).id, USER) is None  # no new subject
        stored = list(uow.session.scalars(select(Suppression)))
    assert len(stored) == 1 and USER not in stored[0].key_hash and len(stored[0].key_hash) == 64

    retried = client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()
    assert (retried["suppressed"], retried["duplicates"]) == (1, 0)  # dropped again, not "seen before"
    clock.advance(days=31)  # the policy's 30 days are over
    again = client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()
    assert again == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}  # the same event, stored now
    assert len(ch_rows(container)) == before + 2
    # counted apart in the metrics too (process-wide counters: the difference)
    assert REGISTRY.get_sample_value("lethe_events_total", {"project": PROJECT, "outcome": "suppressed"}) == counted + 2
    assert container.retention.run(clock.now).stores.get("sql.suppressions") == 1


def test_a_partner_ends_a_suppression(client: TestClient[Any], keys: dict[str, str], container: Container,
                                      clock: FakeClock) -> None:
    erase(client, keys, container, clock)
    path = f"/v1/suppressions/{quote(USER, safe='')}"
    assert client.delete(path, headers=bearer(keys["api_key"])).json() == {"user_id": USER, "suppressed": False}
    assert client.delete(path, headers=bearer(keys["api_key"])).status_code == 404  # no longer suppressed
    assert client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()[
        "suppressed"] == 0
    audit = client.get("/v1/audit", params={"action": "suppression.lifted"}, headers=bearer(keys["officer"]))
    assert len(audit.json()["items"]) == 1 and USER not in audit.text
    assert client.delete(path, headers=bearer(keys["webhook_token"])).status_code == 403


def test_no_suppression_when_the_policy_says_zero(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock
) -> None:
    container.policies.projects[PROJECT] = replace(container.policies.default, suppress_after_erasure_days=0)
    erase(client, keys, container, clock)
    answer = client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()
    assert answer["suppressed"] == 0
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Suppression)) == 0
        assert uow.session.scalar(select(func.count()).select_from(Subject).where(
            Subject.user_key == container.identities.lookup(uow.projects.by_name(PROJECT).id, USER))) == 1


def test_a_run_ahead_of_the_clock_keeps_the_suppressions_its_purge_added(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock) -> None:
    """`lethe jobs run all --now <31 days ahead>`: its purge suppresses the user for 30 days from
    now (the clock the webhook checks with), and its retention step, ahead by 31 days, must not
    lift that suppression at once."""
    created = client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    assert created.status_code == 202
    summaries = [run_job(container, job, clock.now + timedelta(days=31)) for job in ("anonymise", "purge",
                                                                                      "retention")]
    assert summaries[1]["processed"] == 1  # purged
    answer = client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()
    assert answer["suppressed"] == 1
