"""Access and portability (GDPR Art. 15/20): everything held about a user, decrypted, for user
ids of any characters (percent-encoded in the path)."""

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from app.bootstrap import Container
from app.models import AuditEntry
from tests.conftest import FakeClock
from tests.fixtures.platform import ADMIN, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import post

ODD = "a/b+c==?x%y"  # base64-ish, with a slash, plus a query and a percent sign for good measure


def export(client: TestClient[Any], token: str, user: str) -> Any:
    return client.get(f"/v1/subjects/{quote(user, safe='')}/export", headers=bearer(token))


@pytest.mark.parametrize("user", [ODD, "BUmXxFyNMNE6FUVhL+ECSQ=="])
def test_export_returns_everything_decrypted_for_partner_and_officer(client: TestClient[Any], keys: dict[str, str],
                                                                    container: Container, user: str) -> None:
    post(client, keys, [frontend("message_sent", user, text="my words", message_id="m-1", room="r-1"),
                        frontend("name_set", user, user_name="Jo Export")])
    client.post("/v1/deletion-requests", json={"user_id": user, "reason": "asked"}, headers=bearer(keys["api_key"]))
    for token in (keys["api_key"], keys["officer"]):
        response = export(client, token, user)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user_id"] == user
        (project,) = body["projects"]
        assert project["profile"]["display_name"] == "Jo Export"
        assert [m["text"] for m in project["messages"]] == ["my words"]
        assert {e["event"] for e in project["events"]} == {"message_sent", "name_set"}
        assert {e["personal"]["user_name"] for e in project["events"]} == {"Jo Export", "John Doe"}
        # every timestamp says its zone (ClickHouse's come back without one)
        assert all(datetime.fromisoformat(e["at"]).utcoffset() == timedelta(0) for e in project["events"])
        assert [r["status"] for r in project["requests"]] == ["pending"]
    report = client.get(f"/v1/subjects/{quote(user, safe='')}", headers=bearer(keys["officer"]))
    assert report.status_code == 200 and report.json()["user_id"] == user
    with container.uow() as uow:
        entries = list(uow.session.scalars(select(AuditEntry).where(AuditEntry.action == "subject.exported")))
    assert len(entries) == 2 and all(user not in repr((e.actor, e.subject, e.details)) for e in entries)


def test_the_export_lists_others_events_that_name_the_user(client: TestClient[Any], keys: dict[str, str]) -> None:
    """Being banned, or named in someone's profile visit, is data about the user too (Art. 15):
    what happened and where, not the other person's values."""
    post(client, keys, [frontend("session_started", "user_456"),
                        frontend("profile_opened", "u-other", profile_user_id="user_456"),
                        ADMIN[5], ADMIN[6],  # admin_001 bans, then unbans, user_456
                        frontend("profile_opened", "u-other", profile_user_id="user_4567")])  # not them
    (project,) = export(client, keys["api_key"], "user_456").json()["projects"]
    assert sorted((e["event"], e["named_as"], e["room_id"]) for e in project["named_in"]) == [
        ("admin_user_banned", ["banned_user_id"], "16888417"), ("admin_user_unbanned", ["unbanned_user_id"], None),
        ("profile_opened", ["profile_user_id"], "16888417")]
    assert [e["event"] for e in project["events"]] == ["session_started"]  # their own
    (other,) = export(client, keys["api_key"], "u-other").json()["projects"]
    assert other["named_in"] == []


def test_after_anonymisation_the_events_personal_values_are_gone_from_the_export_too(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock
) -> None:
    post(client, keys, frontend("session_started", ODD))
    client.post("/v1/deletion-requests", json={"user_id": ODD}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    (project,) = export(client, keys["api_key"], ODD).json()["projects"]
    assert project["status"] == "hidden"
    assert [e["personal"] for e in project["events"]] == [{}]  # the key is destroyed


def test_export_access_rules(client: TestClient[Any], keys: dict[str, str]) -> None:
    post(client, keys, frontend("session_started", ODD))
    assert export(client, keys["webhook_token"], ODD).status_code == 403
    assert client.get(f"/v1/subjects/{quote(ODD, safe='')}/export").status_code == 401
    assert export(client, keys["api_key"], "nobody").status_code == 404
    assert client.get(f"/v1/subjects/{quote(ODD, safe='')}", headers=bearer(keys["api_key"])).status_code == 403
    other = client.get(f"/v1/subjects/{quote(ODD, safe='')}/export/more", headers=bearer(keys["api_key"]))
    assert other.status_code == 404 and "percent-encoded" in other.json()["detail"]


@pytest.mark.parametrize("user", ["/", "//"])
def test_ids_made_only_of_slashes_reach_every_route_that_takes_one(client: TestClient[Any], keys: dict[str, str],
                                                                    user: str) -> None:
    """The router trims a decoded path of slashes only (`/v1/subjects//`) to the bare prefix:
    those ids must still reach their routes, not a routing 404."""
    path = quote(user, safe="")
    post(client, keys, [frontend("message_sent", user, text="hi", message_id=user, room="r-1"),
                        frontend("name_set", user, user_name="Slash")])
    exported = export(client, keys["api_key"], user)
    assert exported.status_code == 200 and exported.json()["user_id"] == user
    report = client.get(f"/v1/subjects/{path}", headers=bearer(keys["officer"]))
    assert report.status_code == 200, report.text
    assert report.json()["user_id"] == user
    message = client.get(f"/v1/messages/{path}", headers=bearer(keys["api_key"]))
    assert message.status_code == 200 and message.json()["state"] == "visible", message.text
    lifted = client.delete(f"/v1/suppressions/{path}", headers=bearer(keys["api_key"]))  # the route's own answer
    assert lifted.status_code == 404 and lifted.json()["detail"] == "this user is not suppressed", lifted.text
    # the bare prefixes themselves name nothing, and say how to name something
    bare = client.get("/v1/subjects/", headers=bearer(keys["officer"]))
    assert bare.status_code == 404 and "percent-encoded" in bare.json()["detail"]
    assert client.delete("/v1/suppressions", headers=bearer(keys["api_key"])).status_code == 404
