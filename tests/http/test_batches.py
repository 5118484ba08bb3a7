"""Batch intake (issue 12, CONTRACT "Deletion requests"): up to 10,000 users in one call, one
transaction, one outcome per user; progress by status; the same jobs erase them. Suppressions
end with a new request, and every change to the list is audited."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from app.bootstrap import Container
from app.models import AuditEntry, DeletionBatch, DeletionRequest, Suppression
from tests.conftest import FakeClock
from tests.http.conftest import bearer
from tests.http.test_suppression import USER, erase, late_event


def batch(client: TestClient[Any], keys: dict[str, str], body: dict[str, Any], key: str | None = None) -> Any:
    headers = bearer(keys["api_key"]) | ({"Idempotency-Key": key} if key else {})
    return client.post("/v1/deletion-requests/batch", json=body, headers=headers)


def count(container: Container, model: Any) -> int:
    with container.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def test_each_user_gets_an_outcome_in_one_call(client: TestClient[Any], keys: dict[str, str],
                                               container: Container, clock: FakeClock) -> None:
    already = client.post("/v1/deletion-requests", json={"user_id": "u-open"}, headers=bearer(keys["api_key"]))
    ids = ["u-1", "a/b+c==", "u-open", "", "x" * 201, "u-1", "nul\x00id"]
    answer = batch(client, keys, {"user_ids": ids, "mode": "immediate", "reason": "market closed"})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    outcomes = [(o["user_id"], o["outcome"]) for o in body["outcomes"]]
    assert outcomes == [("u-1", "created"), ("a/b+c==", "created"), ("u-open", "open"), ("", "invalid"),
                        ("x" * 201, "invalid"), ("u-1", "open"), ("nul\x00id", "invalid")]
    assert body["outcomes"][2]["request"] == already.json()["id"]
    assert body["outcomes"][5]["request"] == body["outcomes"][0]["request"]
    assert "longer than 200" in body["outcomes"][4]["detail"] and "NUL" in body["outcomes"][6]["detail"]
    assert all(o["request"] is None for o in body["outcomes"] if o["outcome"] == "invalid")
    one = client.get(f"/v1/deletion-requests/{body['outcomes'][1]['request']}", headers=bearer(keys["api_key"]))
    assert one.json()["user_id"] == "a/b+c==" and one.json()["mode"] == "immediate"

    progress = client.get(f"/v1/deletion-requests/batch/{body['batch']}", headers=bearer(keys["api_key"])).json()
    assert (progress["total"], progress["by_status"], progress["invalid"]) == (3, {"pending": 3}, 3)
    container.erasure.anonymise(clock.now)  # the same job, in bulk
    progress = client.get(f"/v1/deletion-requests/batch/{body['batch']}", headers=bearer(keys["api_key"])).json()
    assert progress["by_status"] == {"completed": 2, "in_grace": 1}  # u-open was a grace request
    with container.uow() as uow:
        audit = uow.session.scalar(select(AuditEntry.details).where(AuditEntry.action == "deletion_batch.created"))
        created = uow.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "deletion_request.created"))
    assert audit == {"batch_id": body["batch"], "mode": "immediate", "created": 2, "open": 2, "invalid": 3}
    assert created == 3  # one entry per request, the earlier single one included
    assert "a/b+c==" not in str(audit)


@pytest.mark.parametrize(("ids", "message"), [
    ([], "at least one"), ([f"u-{i}" for i in range(10_001)], "this one has 10001")])
def test_a_batch_too_big_or_empty_is_rejected_whole(client: TestClient[Any], keys: dict[str, str],
                                                    container: Container, ids: list[str], message: str) -> None:
    answer = batch(client, keys, {"user_ids": ids})
    assert answer.status_code == 400 and message in answer.text and "user_ids" in answer.text
    assert count(container, DeletionRequest) == 0 and count(container, DeletionBatch) == 0


def test_the_same_idempotency_key_gives_the_same_answer(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container) -> None:
    body = {"user_ids": ["u-1", "u-2"], "reason": "ticket 9"}
    first = batch(client, keys, body, key="k-1")
    again = batch(client, keys, body, key="k-1")
    assert again.status_code == 202 and again.json() == first.json()
    assert count(container, DeletionBatch) == 1 and count(container, DeletionRequest) == 2
    assert batch(client, keys, {**body, "user_ids": ["u-3"]}, key="k-1").status_code == 422
    with container.uow() as uow:  # the stored answer holds no user id
        stored = uow.idempotency.get(uow.projects.by_name("partner-prod").id, "k-1")  # type: ignore[union-attr]
        assert stored is not None and "u-1" not in str(stored.response)


def test_another_projects_batch_is_not_found(client: TestClient[Any], keys: dict[str, str],
                                             container: Container) -> None:
    other = container.accounts.create_project("other-partner")
    made = batch(client, keys, {"user_ids": ["u-1"]}).json()
    hidden = client.get(f"/v1/deletion-requests/batch/{made['batch']}", headers=bearer(other.api_key))
    assert hidden.status_code == 404
    assert client.get("/v1/deletion-requests/batch/nope", headers=bearer(keys["api_key"])).status_code == 404
    assert client.post("/v1/deletion-requests/batch", json={"user_ids": ["u"]},
                       headers=bearer(keys["webhook_token"])).status_code == 403


def test_a_new_request_ends_a_suppression_and_every_change_is_audited(client: TestClient[Any],
                                                                       keys: dict[str, str], container: Container,
                                                                       clock: FakeClock) -> None:
    erase(client, keys, container, clock)
    assert count(container, Suppression) == 1
    assert client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()[
        "suppressed"] == 1
    assert batch(client, keys, {"user_ids": [USER]}).json()["outcomes"][0]["outcome"] == "created"
    assert count(container, Suppression) == 0
    assert client.post("/v1/events", json=late_event(), headers=bearer(keys["webhook_token"])).json()[
        "suppressed"] == 0
    with container.uow() as uow:
        actions = list(uow.session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("suppression%"))))
    assert actions == ["suppressions.added", "suppression.ended"]
    container.retention.run(clock.now)  # nothing left to expire: no entry
    erase(client, keys, container, clock, user="second")
    clock.advance(days=31)
    container.retention.run(clock.now)
    with container.uow() as uow:
        expired = uow.session.scalar(select(AuditEntry.details).where(AuditEntry.action == "suppressions.expired"))
    assert expired == {"suppressions": 1}
