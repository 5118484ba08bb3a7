"""Partner API over HTTP (Litestar's test client, real stores)."""

from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import update

from app.bootstrap import Container
from app.models import DeletionRequest
from tests.conftest import FakeClock
from tests.http.conftest import bearer

URL = "/v1/deletion-requests"


def post(client: TestClient[Any], key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(URL, json=body, headers={**bearer(key), **headers})


def test_create_read_list_restore(client: TestClient[Any], project: dict[str, str], container: Container,
                                  clock: FakeClock) -> None:
    key = project["api_key"]
    created = post(client, key, {"user_id": "u-1", "reason": "support ticket"})
    assert created.status_code == 202
    body = created.json()
    assert body["status"] == "pending" and body["user_id"] == "u-1" and body["holds"] == []
    assert client.get(f"{URL}/{body['id']}", headers=bearer(key)).json()["id"] == body["id"]
    again = post(client, key, {"user_id": "u-1"})
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    listed = client.get(URL, params={"user_id": "u-1"}, headers=bearer(key)).json()
    assert [i["id"] for i in listed["items"]] == [body["id"]] and listed["next_cursor"] is None
    container.erasure.anonymise(clock.now)
    restored = client.post(f"{URL}/{body['id']}/restore", headers=bearer(key))
    assert restored.status_code == 200 and restored.json()["status"] == "restored"
    refused = client.post(f"{URL}/{body['id']}/restore", headers=bearer(key))
    assert refused.status_code == 409 and "already restored" in refused.json()["detail"]


def test_a_users_requests_are_found_by_user_id_after_the_purge_unlinked_them(
        client: TestClient[Any], project: dict[str, str], container: Container, clock: FakeClock) -> None:
    """The purge destroys the link from the user id to its subject, but the partner still
    finds the completed request by the user id (the request keeps the audit log's keyed hash
    of it); the request itself no longer names the user. Other users' requests stay out."""
    key = project["api_key"]
    done = post(client, key, {"user_id": "u-1", "mode": "immediate"}).json()
    other = post(client, key, {"user_id": "u-2", "mode": "immediate"}).json()
    container.erasure.anonymise(clock.now)
    for user, request in (("u-1", done), ("u-2", other)):
        listed = client.get(URL, params={"user_id": user}, headers=bearer(key)).json()["items"]
        assert [(i["id"], i["status"], i["user_id"]) for i in listed] == [(request["id"], "completed", None)]
        only = client.get(URL, params={"user_id": user, "status": "completed"}, headers=bearer(key)).json()
        assert [i["id"] for i in only["items"]] == [request["id"]]
    clock.advance(seconds=1)
    again = post(client, key, {"user_id": "u-1"}).json()  # the user came back and asked again
    listed = client.get(URL, params={"user_id": "u-1"}, headers=bearer(key)).json()["items"]
    assert [(i["id"], i["user_id"]) for i in listed] == [(again["id"], "u-1"), (done["id"], None)]
    assert client.get(URL, params={"user_id": "u-3"}, headers=bearer(key)).json()["items"] == []


def test_open_requests_made_before_the_audit_subject_get_it_at_migrate(
        client: TestClient[Any], project: dict[str, str], container: Container, clock: FakeClock) -> None:
    """A request made by an older version has no audit subject: `lethe migrate` gives it one
    from the user id while that is linked, so its purge does not hide it from the filter."""
    key = project["api_key"]
    old = post(client, key, {"user_id": "u-1"}).json()
    post(client, key, {"user_id": "u-2"})
    with container.uow() as uow:
        uow.session.execute(update(DeletionRequest).where(DeletionRequest.id == old["id"]).values(audit_subject=None))
        uow.commit()
    assert container.deletions.keep_audit_subjects(batch=1) == 1
    assert container.deletions.keep_audit_subjects() == 0  # safe to run again
    container.erasure.anonymise(clock.now)
    container.erasure.purge(clock.now + timedelta(days=31))
    listed = client.get(URL, params={"user_id": "u-1"}, headers=bearer(key)).json()["items"]
    assert [(i["id"], i["status"]) for i in listed] == [(old["id"], "completed")]


def test_immediate_restore_is_409_with_reason(client: TestClient[Any], project: dict[str, str]) -> None:
    body = post(client, project["api_key"], {"user_id": "u-1", "mode": "immediate"}).json()
    refused = client.post(f"{URL}/{body['id']}/restore", headers=bearer(project["api_key"]))
    assert refused.status_code == 409
    assert refused.json() == {"status_code": 409, "detail": refused.json()["detail"], "extra": None}
    assert "immediate" in refused.json()["detail"]


def test_idempotency_key_semantics(client: TestClient[Any], project: dict[str, str]) -> None:
    key = project["api_key"]
    first = post(client, key, {"user_id": "u-1"}, **{"Idempotency-Key": "abc"})
    again = post(client, key, {"user_id": "u-1"}, **{"Idempotency-Key": "abc"})
    assert (again.status_code, again.json()) == (first.status_code, first.json()) == (202, first.json())
    other = post(client, key, {"user_id": "u-2"}, **{"Idempotency-Key": "abc"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    # an empty key would be one key shared by every such call: refused, naming the header
    empty = post(client, key, {"user_id": "u-3"}, **{"Idempotency-Key": ""})
    assert empty.status_code == 400 and "Idempotency-Key" in empty.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": 5}, "user_id"),
    ({"user_id": "u", "mode": "soon"}, "mode"),
    ({"user_id": "u", "colour": "red"}, "colour"),
])
def test_invalid_body_is_400_naming_the_field(client: TestClient[Any], project: dict[str, str],
                                              body: dict[str, Any], field: str) -> None:
    response = post(client, project["api_key"], body)
    assert response.status_code == 400
    assert field in response.json()["detail"]


def test_body_that_is_not_json_is_400(client: TestClient[Any], project: dict[str, str]) -> None:
    response = client.post(URL, content=b"{nope", headers={**bearer(project["api_key"]),
                                                           "Content-Type": "application/json"})
    assert response.status_code == 400


@pytest.mark.parametrize(("content", "detail"), [
    (b"", "invalid request: body: a JSON object is required"),
    (b"[]", "invalid request: body: Expected `object`, got `array`"),
])
def test_an_empty_or_wrong_body_is_named_as_the_body(client: TestClient[Any], project: dict[str, str],
                                                     content: bytes, detail: str) -> None:
    for path, method in ((URL, client.post), ("/v1/callback", client.put)):
        response = method(path, content=content, headers={**bearer(project["api_key"]),
                                                           "Content-Type": "application/json"})
        assert (response.status_code, response.json()["detail"]) == (400, detail)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}])
def test_missing_or_bad_token_is_401(client: TestClient[Any], project: dict[str, str],
                                     headers: dict[str, str]) -> None:
    response = client.get(URL, headers=headers)
    assert response.status_code == 401 and response.json()["detail"]


def test_webhook_and_officer_tokens_cannot_use_the_partner_api(client: TestClient[Any], project: dict[str, str],
                                                               container: Container) -> None:
    officer = container.accounts.create_officer("olga", ["acme"])
    for token in (project["webhook_token"], officer.token):
        assert client.get(URL, headers=bearer(token)).status_code == 403
        assert post(client, token, {"user_id": "u-1"}).status_code == 403


def test_another_projects_request_is_404(client: TestClient[Any], project: dict[str, str],
                                         container: Container) -> None:
    other = container.accounts.create_project("other")
    body = post(client, project["api_key"], {"user_id": "u-1"}).json()
    assert client.get(f"{URL}/{body['id']}", headers=bearer(other.api_key)).status_code == 404
    assert client.post(f"{URL}/{body['id']}/restore", headers=bearer(other.api_key)).status_code == 404
    assert client.get(URL, headers=bearer(other.api_key)).json()["items"] == []


def test_pagination_limits(client: TestClient[Any], project: dict[str, str], clock: FakeClock) -> None:
    key = project["api_key"]
    for i in range(5):
        clock.advance(seconds=1)
        post(client, key, {"user_id": f"u-{i}"})
    first = client.get(URL, params={"limit": 2}, headers=bearer(key)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get(URL, params={"limit": 2, "cursor": first["next_cursor"]}, headers=bearer(key)).json()
    assert {i["id"] for i in second["items"]}.isdisjoint({i["id"] for i in first["items"]})
    for bad in ({"limit": 501}, {"limit": 0}, {"cursor": "garbage"}, {"status": "sleeping"}):
        response = client.get(URL, params=bad, headers=bearer(key))
        assert response.status_code == 400, bad
        assert next(iter(bad)) in response.json()["detail"]
