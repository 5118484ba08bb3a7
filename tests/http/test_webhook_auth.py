"""Webhook authentication that fits the sender (issue 11 §2): Standard Webhooks signatures,
the secret URL, the bearer webhook_token, and which of them a project accepts."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import structlog
from litestar.testing import TestClient

from app.bootstrap import Container
from app.domain import webhooks as hooks
from app.services.operator_views import WebhookAuthOut
from tests.conftest import FakeClock
from tests.fixtures.platform import BACKEND, PROJECT, frontend
from tests.http.conftest import bearer

USER = "BUmXxFyNMNE6FUVhL+ECSQ=="


def signed_post(client: TestClient[Any], secret: str, body: Any, now: FakeClock, *, msg_id: str | None = None,
                ts: int | None = None, raw: bytes | None = None, signature: str | None = None) -> Any:
    """POST /v1/events signed as the platform's Standard Webhooks sender would."""
    data = raw if raw is not None else json.dumps(body).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(now().timestamp()) if ts is None else ts
    signature = signature or hooks.sign(hooks.signing_key(secret), msg_id, ts, data)
    return client.post("/v1/events", content=data, headers={
        "content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
        "webhook-signature": signature})


def requests_of(client: TestClient[Any], keys: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/v1/deletion-requests", params={"user_id": USER},
                                             headers=bearer(keys["api_key"])).json()["items"]
    return items


def assert_error(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"status_code", "detail", "extra"} and body["status_code"] == status
    for word in words:
        assert word in body["detail"]
    return body


def test_a_new_project_gets_a_signing_secret_and_a_secret_url_stored_only_in_sealed_or_hashed_form(
        container: Container, keys: dict[str, str]) -> None:
    assert keys["webhook_secret"].startswith("whsec_") and len(hooks.signing_key(keys["webhook_secret"])) == 32
    assert keys["webhook_url_path"].startswith("/v1/hooks/") and len(keys["webhook_url_path"]) >= 10 + 43
    url_secret = keys["webhook_url_path"].removeprefix("/v1/hooks/")
    with container.uow() as uow:
        project = uow.projects.by_name(PROJECT)
        assert project is not None
        stored = " ".join(str(getattr(project, c.key)) for c in project.__table__.columns)
    for secret in (keys["webhook_secret"], keys["webhook_secret"].removeprefix("whsec_"), url_secret):
        assert secret not in stored
    assert project.webhook_auth == "signed,bearer,url"


def test_a_signed_delivery_is_accepted_without_a_bearer_token(
        client: TestClient[Any], keys: dict[str, str], clock: FakeClock) -> None:
    sent = frontend("message_sent", text="hello", message_id="m-1", room="r")
    response = signed_post(client, keys["webhook_secret"], [sent, BACKEND[0]], clock)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": [], "suppressed": 0}
    message = client.get("/v1/messages/m-1", headers=bearer(keys["api_key"]))
    assert message.status_code == 200 and message.json()["state"] == "visible"


def test_a_wrong_or_missing_signature_is_401(client: TestClient[Any], container: Container,
                                              keys: dict[str, str], clock: FakeClock) -> None:
    body = frontend("message_sent", text="hello", message_id="m-1")
    other = container.accounts.create_project("other").webhook_secret
    assert_error(signed_post(client, other, body, clock), 401, "no webhook-signature matches")
    assert_error(signed_post(client, keys["webhook_secret"], body, clock, signature="v1,AAAA"), 401)
    assert_error(signed_post(client, keys["webhook_secret"], body, clock, signature="v2,AAAA"), 401,
                 "no v1 signature")
    partial = client.post("/v1/events", json=body, headers={"webhook-signature": "v1,AAAA"})
    assert_error(partial, 401, "missing: webhook-id, webhook-timestamp")
    assert_error(client.post("/v1/events", json=body), 401, "Authorization: Bearer", "webhook-signature")
    # a body naming an unknown project reads like a wrong signature: nothing says whether it exists
    unknown = frontend("message_sent", project="nobody")
    assert_error(signed_post(client, keys["webhook_secret"], unknown, clock), 401, "no webhook-signature matches")
    # the signature headers open only POST /v1/events, nothing else
    assert client.get("/v1/events/rejected", headers={"webhook-signature": "v1,AAAA"}).status_code == 401


def test_one_changed_byte_of_the_body_is_401(client: TestClient[Any], keys: dict[str, str],
                                              clock: FakeClock) -> None:
    data = json.dumps(frontend("message_sent", text="hello", message_id="m-1")).encode()
    ts = int(clock.now.timestamp())
    signature = hooks.sign(hooks.signing_key(keys["webhook_secret"]), "msg_1", ts, data)
    tampered = data.replace(b"hello", b"hellO")
    assert_error(signed_post(client, keys["webhook_secret"], None, clock, msg_id="msg_1", raw=tampered,
                             signature=signature), 401, "no webhook-signature matches")
    ok = signed_post(client, keys["webhook_secret"], None, clock, msg_id="msg_1", raw=data, signature=signature)
    assert ok.status_code == 202


@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_a_stale_or_future_timestamp_is_401(client: TestClient[Any], keys: dict[str, str], clock: FakeClock,
                                            skew: int) -> None:
    ts = int(clock.now.timestamp()) + skew
    response = signed_post(client, keys["webhook_secret"], frontend("session_started"), clock, ts=ts)
    assert_error(response, 401, "webhook-timestamp is more than 5 minutes")


def test_a_replayed_webhook_id_is_a_duplicate_with_one_effect(client: TestClient[Any], keys: dict[str, str],
                                                              clock: FakeClock) -> None:
    confirmed = frontend("delete_profile_confirmed", created_at="2026-03-01T11:59:00Z")
    first = signed_post(client, keys["webhook_secret"], confirmed, clock, msg_id="msg_confirm")
    assert first.status_code == 202
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}
    (request,) = requests_of(client, keys)
    client.post(f"/v1/deletion-requests/{request['id']}/restore", headers=bearer(keys["api_key"]))
    clock.advance(minutes=2)
    # the same delivery again (a retry): counted as a duplicate, and no second request opens
    again = signed_post(client, keys["webhook_secret"], confirmed, clock, msg_id="msg_confirm")
    assert again.status_code == 202
    assert again.json() == {"accepted": 1, "duplicates": 1, "rejected": [], "suppressed": 0}
    # even with another body: the webhook-id names the delivery
    later = frontend("delete_profile_confirmed", created_at="2026-03-01T12:01:00Z")
    assert signed_post(client, keys["webhook_secret"], later, clock, msg_id="msg_confirm").json()["duplicates"] == 1
    assert [r["status"] for r in requests_of(client, keys)] == ["restored"]
    # a new delivery id with the new confirmation does open one
    fresh = signed_post(client, keys["webhook_secret"], later, clock, msg_id="msg_confirm_2")
    assert fresh.json()["duplicates"] == 0
    assert sorted(r["status"] for r in requests_of(client, keys)) == ["pending", "restored"]


def test_a_failed_ingest_does_not_burn_the_webhook_id(client: TestClient[Any], container: Container,
                                                     keys: dict[str, str], clock: FakeClock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = container.ingest._store

    def failing(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the store fell over")

    monkeypatch.setattr(container.ingest, "_store", failing)
    confirmed = frontend("delete_profile_confirmed", created_at="2026-03-01T11:59:00Z")
    failed = signed_post(client, keys["webhook_secret"], confirmed, clock, msg_id="msg_x")
    assert failed.status_code == 503
    monkeypatch.setattr(container.ingest, "_store", store)
    retried = signed_post(client, keys["webhook_secret"], confirmed, clock, msg_id="msg_x")
    assert retried.status_code == 202
    assert retried.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}
    assert [r["status"] for r in requests_of(client, keys)] == ["pending"]


def test_a_refused_delivery_does_not_burn_the_webhook_id(client: TestClient[Any], keys: dict[str, str],
                                                        clock: FakeClock) -> None:
    """A delivery whose every envelope was refused (400) stored nothing: the platform may correct
    it and send it again under the same webhook-id, and that must be stored, not dropped as a
    duplicate."""
    bad = frontend("delete_profile_confirmed", created_at="not a time")
    refused = signed_post(client, keys["webhook_secret"], bad, clock, msg_id="msg_fixed")
    assert refused.status_code == 400 and refused.json()["accepted"] == 0
    fixed = frontend("delete_profile_confirmed", created_at="2026-03-01T11:59:00Z")
    retried = signed_post(client, keys["webhook_secret"], fixed, clock, msg_id="msg_fixed")
    assert retried.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}
    assert [r["status"] for r in requests_of(client, keys)] == ["pending"]
    # stored now, so the same id again is a duplicate
    assert signed_post(client, keys["webhook_secret"], fixed, clock, msg_id="msg_fixed").json()["duplicates"] == 1


def test_the_secret_url_accepts_events_and_a_wrong_one_is_401(client: TestClient[Any], keys: dict[str, str]) -> None:
    body = [frontend("message_sent", text="hi", message_id="m-2", room="r")]
    response = client.post(keys["webhook_url_path"], json=body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}
    assert client.post(keys["webhook_url_path"], json=body).json()["duplicates"] == 1  # same payload: one effect
    wrong = keys["webhook_url_path"][:-4] + "AAAA"
    error = assert_error(client.post(wrong, json=body), 401, "unknown or expired webhook URL")
    assert wrong.rsplit("/", 1)[1] not in json.dumps(error)
    # another project's events at this project's URL are refused like with its token
    other = client.post(keys["webhook_url_path"], json=frontend("message_sent", project="someone-else"))
    assert other.status_code == 400


def test_a_project_accepts_only_the_methods_it_allows(client: TestClient[Any], container: Container,
                                                      keys: dict[str, str], clock: FakeClock) -> None:
    body = frontend("session_started")
    assert container.webhooks.set_methods(PROJECT, "signed") == WebhookAuthOut(PROJECT, ["signed"])
    assert_error(client.post("/v1/events", json=body, headers=bearer(keys["webhook_token"])), 403,
                 "does not accept webhooks by bearer", "it accepts: signed")
    assert_error(client.post(keys["webhook_url_path"], json=body), 403, "does not accept webhooks by url")
    assert signed_post(client, keys["webhook_secret"], body, clock).status_code == 202

    container.webhooks.set_methods(PROJECT, "bearer,url")
    assert_error(signed_post(client, keys["webhook_secret"], body, clock), 403, "by signed",
                 "it accepts: bearer, url")
    assert client.post("/v1/events", json=body, headers=bearer(keys["webhook_token"])).status_code == 202
    assert client.post(keys["webhook_url_path"], json=body).status_code == 202
    # a partner key still is the wrong role for events
    assert client.post("/v1/events", json=body, headers=bearer(keys["api_key"])).status_code == 403


def test_after_a_rotation_both_secrets_verify_for_24_hours(client: TestClient[Any], container: Container,
                                                          keys: dict[str, str], clock: FakeClock) -> None:
    old = keys["webhook_secret"]
    rotated = container.webhooks.rotate_signing_secret(PROJECT)
    new = rotated.webhook_secret
    assert new != old and rotated.project == PROJECT
    old_url, new_url = keys["webhook_url_path"], container.webhooks.rotate_url(PROJECT).webhook_url_path
    body = frontend("session_started")
    for secret in (old, new):
        assert signed_post(client, secret, body, clock).status_code == 202
    for path in (old_url, new_url):
        assert client.post(path, json=body).status_code == 202
    clock.advance(hours=23, minutes=59)
    assert signed_post(client, old, body, clock).status_code == 202
    assert client.post(old_url, json=body).status_code == 202
    clock.advance(minutes=1)  # the overlap has ended: the cached keys must not outlive it
    assert_error(signed_post(client, old, body, clock), 401, "no webhook-signature matches")
    assert_error(client.post(old_url, json=body), 401, "unknown or expired webhook URL")
    assert signed_post(client, new, body, clock).status_code == 202
    assert client.post(new_url, json=body).status_code == 202


def test_an_offboarded_project_refuses_signed_and_url_deliveries(client: TestClient[Any], container: Container,
                                                                 keys: dict[str, str], clock: FakeClock) -> None:
    body = frontend("session_started")
    assert signed_post(client, keys["webhook_secret"], body, clock).status_code == 202
    assert client.post(keys["webhook_url_path"], json=body).status_code == 202
    container.accounts.offboard_project(PROJECT)
    # this process at once (another within 5 s), though the secrets were just used and cached
    assert_error(signed_post(client, keys["webhook_secret"], body, clock), 401)
    assert_error(client.post(keys["webhook_url_path"], json=body), 401)


def test_the_secret_url_never_reaches_metrics_or_logs(client: TestClient[Any], container: Container,
                                                      keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []  # every line the service's loggers render (they all print through PrintLogger)
    for method in ("msg", "debug", "info", "warning", "warn", "error", "critical", "exception", "fatal", "err",
                   "failure", "log"):
        monkeypatch.setattr(structlog.PrintLogger, method, lambda self, message: lines.append(message),
                            raising=False)
    url_secret = keys["webhook_url_path"].removeprefix("/v1/hooks/")
    assert client.post(keys["webhook_url_path"], json=frontend("session_started")).status_code == 202
    assert client.post("/v1/hooks/not-a-secret-at-all", json={}).status_code == 401

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(container.ingest, "ingest_async", broken)
    assert client.post(keys["webhook_url_path"], json=frontend("session_started")).status_code == 500
    metrics = client.get("/metrics").text
    assert "/v1/hooks/" in metrics  # the route is counted, by its template
    assert url_secret not in metrics and "not-a-secret-at-all" not in metrics
    assert any("unforeseen" in line for line in lines)  # the 500 was logged (with its traceback)...
    assert not [line for line in lines if url_secret in line or "not-a-secret" in line]  # ...not the path
