"""What the platform's events do to operational data, and the user-driven erasure flow."""

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import TestClient

from app.bootstrap import Container
from app.services.policies import PolicyBook
from tests.conftest import FakeClock
from tests.fixtures.platform import BACKEND, PROJECT, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import UNREADABLE, ch_rows, opened_profile, post, readable, subject_id

USER = "BUmXxFyNMNE6FUVhL+ECSQ=="


def message(client: TestClient[Any], keys: dict[str, str], message_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/messages/{message_id}", headers=bearer(keys["api_key"]))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_message_lifecycle_from_events(client: TestClient[Any], keys: dict[str, str]) -> None:
    post(client, keys, [frontend("message_sent", text="hi all", message_id="m-1", room="r-1", messageType="text"),
                        frontend("message_sent", text="buy now", message_id="m-2", room="r-1", messageType="text")])
    assert message(client, keys, "m-1") == {"message_id": "m-1", "room_id": "r-1", "state": "visible",
                                            "deleted_at": None, "open_complaints": 0, "archived_at": None}
    post(client, keys, frontend("message_deleted", message_id="m-1", created_at="2026-01-15T00:00:00Z"))
    deleted = message(client, keys, "m-1")
    assert deleted["state"] == "deleted" and deleted["deleted_at"].startswith("2026-01-15T00:00:00")
    post(client, keys, [frontend("report_sent", message_id="m-2", reportType="Spam", user_id="reporter-1"),
                        {"event": "message_moderation", "value": {"project": PROJECT, "message_id": "m-2",
                                                                  "action": "hide", "reason": "spam"}}])
    reported = message(client, keys, "m-2")
    assert reported["state"] == "reported" and reported["open_complaints"] == 1
    post(client, keys, {"event": "message_moderation", "value": {"project": PROJECT, "message_id": "m-2",
                                                                  "action": "restore"}})
    assert message(client, keys, "m-2")["state"] == "visible"
    assert client.get("/v1/messages/nope", headers=bearer(keys["api_key"])).status_code == 404


def test_message_ids_of_any_characters_work_percent_encoded(client: TestClient[Any], keys: dict[str, str]) -> None:
    odd = "chat/42+x=y ü%"
    post(client, keys, [frontend("message_sent", text="hi", message_id=odd, room="r-1"),
                        frontend("message_deleted", message_id=odd),
                        frontend("report_sent", message_id=odd, reportType="Spam", user_id="reporter-1")])
    path = f"/v1/messages/{quote(odd, safe='')}"
    assert message(client, keys, quote(odd, safe=""))["state"] == "reported"
    resolved = client.post(f"{path}/complaints/resolve", headers=bearer(keys["api_key"]))
    assert resolved.status_code == 200 and resolved.json()["message_id"] == odd
    assert resolved.json()["state"] == "archived"
    for wrong in (f"{path}/complaints", f"{path}/other/resolve", "/v1/messages/a/b"):
        assert client.post(wrong, headers=bearer(keys["api_key"])).status_code == 404
    assert client.get("/v1/messages/a/b", headers=bearer(keys["api_key"])).status_code == 404


def test_admin_message_and_admin_delete(client: TestClient[Any], keys: dict[str, str]) -> None:
    post(client, keys, {"event": "admin_message_sent", "value": {
        "user_id": "admin_001", "project": PROJECT, "name": "Admin User", "role": "admin", "room_id": "16888417",
        "message_id": "msg_123", "text": "Welcome to the chat!"}})
    assert message(client, keys, "msg_123")["state"] == "visible"
    post(client, keys, {"event": "admin_message_deleted", "value": {
        "user_id": "admin_001", "project": PROJECT, "message_id": "msg_123", "message_author_id": "user_456",
        "reason": "Inappropriate content"}})
    assert message(client, keys, "msg_123")["state"] == "deleted"


def test_profile_events_update_the_profile(client: TestClient[Any], keys: dict[str, str],
                                           container: Container) -> None:
    post(client, keys, [frontend("name_set", user_name="Jo", created_at="2026-01-14T10:00:00Z"),
                        frontend("avatar_set", type="custom", url="https://cdn/a.png",
                                 created_at="2026-01-14T10:01:00Z"),
                        frontend("name_changed", user_name="Joanna", created_at="2026-01-14T11:00:00Z")])
    post(client, keys, frontend("name_changed", user_name="Late", created_at="2026-01-14T09:00:00Z"))
    assert opened_profile(container, subject_id(container, USER)) == ("Joanna", "https://cdn/a.png")


def test_login_ip_is_stored_only_when_the_policy_allows(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container, tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from app.models import Login

    def logins() -> int:
        with container.uow() as uow:
            return int(uow.session.scalar(select(func.count()).select_from(Login)) or 0)

    post(client, keys, BACKEND[3])
    assert logins() == 0
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / f"{PROJECT}.toml").write_text("[lifecycle]\nstore_ip = true\n")
    container.policies.projects.update(PolicyBook.load(tmp_path).projects)
    login = {**BACKEND[3], "value": {**BACKEND[3]["value"], "created_at": "2026-02-01T00:00:00Z"}}
    post(client, keys, login)
    assert logins() == 1


def test_user_deletes_and_restores_their_account_through_events(client: TestClient[Any], keys: dict[str, str],
                                                                 container: Container, clock: FakeClock) -> None:
    post(client, keys, [frontend("message_sent", text="my words", message_id="m-1", room="r"),
                        frontend("name_set", user_name="John Doe")])
    post(client, keys, frontend("delete_profile_confirmed", created_at="2026-02-01T00:00:00Z"))
    listed = client.get("/v1/deletion-requests", params={"user_id": USER}, headers=bearer(keys["api_key"])).json()
    (request,) = listed["items"]
    assert (request["source"], request["mode"], request["status"]) == ("user", "grace", "pending")
    container.erasure.anonymise(clock.now)
    assert message(client, keys, "m-1")["state"] == "anonymised"
    personal = {(r["user_name"], r["nickname"], r["text"]) for r in readable(container, ch_rows(container))}
    assert personal <= {(UNREADABLE, UNREADABLE, UNREADABLE), (UNREADABLE, UNREADABLE, "")}  # key destroyed
    post(client, keys, frontend("delete_profile_cancelled", created_at="2026-02-01T00:01:00Z"))
    post(client, keys, frontend("account_restored", created_at="2026-02-02T00:00:00Z"))
    restored = client.get(f"/v1/deletion-requests/{request['id']}", headers=bearer(keys["api_key"])).json()
    assert restored["status"] == "restored"
    assert message(client, keys, "m-1")["state"] == "visible"


def test_events_of_a_user_being_erased_arrive_blank(client: TestClient[Any], keys: dict[str, str],
                                                    container: Container, clock: FakeClock) -> None:
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    post(client, keys, frontend("session_started", created_at="2026-03-01T00:00:00Z"))
    (row,) = ch_rows(container)
    assert (row["user_name"], row["source_url"], row["user_agent"]) == ("", "", "")


def test_immediate_request_deletes_messages_and_verifies_events(client: TestClient[Any], keys: dict[str, str],
                                                                container: Container, clock: FakeClock) -> None:
    post(client, keys, [frontend("message_sent", text="mine", message_id="m-1", room="r"),
                        frontend("session_started", created_at="2026-01-20T00:00:00Z"),
                        frontend("message_sent", text="theirs", message_id="m-2", room="r", user_id="other")])
    created = client.post("/v1/deletion-requests", json={"user_id": USER, "mode": "immediate"},
                          headers=bearer(keys["api_key"])).json()
    container.erasure.anonymise(clock.now)
    done = client.get(f"/v1/deletion-requests/{created['id']}", headers=bearer(keys["api_key"])).json()
    assert done["status"] == "completed"
    assert done["evidence"]["sql.messages"] == {"anonymised": 1, "deleted": 1, "residual": 0}
    # events are made unreadable (their key destroyed), not deleted: the evidence says so
    assert done["evidence"]["clickhouse.events"] == {"anonymised": 2, "residual": 0}
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).status_code == 404
    assert message(client, keys, "m-2")["state"] == "visible"
    assert len(ch_rows(container)) == 3  # events stay (anonymous): counts do not change


def test_a_run_with_grace_and_immediate_requests_counts_each_ones_events(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock) -> None:
    """The run purges the immediate request's user beside anonymising both: the grace
    request's evidence still counts the events its own step made unreadable."""
    post(client, keys, [frontend("session_started", created_at="2026-01-20T00:00:00Z"),
                        frontend("message_sent", text="a", message_id="m-1", room="r"),
                        frontend("session_started", user_id="u-now", created_at="2026-01-20T00:00:00Z")])
    grace = client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"])).json()
    now = client.post("/v1/deletion-requests", json={"user_id": "u-now", "mode": "immediate"},
                      headers=bearer(keys["api_key"])).json()
    assert container.erasure.anonymise(clock.now).processed == 2
    evidence = {r: client.get(f"/v1/deletion-requests/{r}", headers=bearer(keys["api_key"])).json()["evidence"]
                for r in (grace["id"], now["id"])}
    assert evidence[grace["id"]]["clickhouse.events"] == {"anonymised": 2}
    assert evidence[now["id"]]["clickhouse.events"] == {"anonymised": 1, "residual": 0}


def test_subject_report_for_an_officer(client: TestClient[Any], keys: dict[str, str],
                                       container: Container) -> None:
    officer = keys["officer"]
    post(client, keys, [frontend("message_sent", text="x", message_id="m-1", room="r",
                                 created_at="2026-01-10T08:00:00Z"),
                        frontend("name_set", user_name="Jo", created_at="2026-01-12T08:00:00Z")])
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    report = client.get(f"/v1/subjects/{USER}", headers=bearer(officer)).json()
    (entry,) = report["projects"]
    # first seen at the user's earliest event, not when Lethe received it (never after last_seen)
    assert (entry["first_seen"], entry["last_seen"]) == ("2026-01-10T08:00:00+00:00", "2026-01-12T08:00:00+00:00")
    assert entry["stores"]["sql.messages"] == 1 and entry["stores"]["sql.profiles"] == 1
    assert entry["stores"]["clickhouse.events"] == {"rows": 2, "with_personal_values": 2}
    assert [r["status"] for r in entry["requests"]] == ["pending"]
    assert entry["holds"] == []
    held = client.post("/v1/holds", json={"scope": "room", "target": "r", "reason": "x"},
                       headers=bearer(officer)).json()
    again = client.get(f"/v1/subjects/{USER}", headers=bearer(officer)).json()["projects"][0]
    assert [h["id"] for h in again["holds"]] == [held["id"]]
    assert client.get("/v1/subjects/nobody", headers=bearer(officer)).status_code == 404
    assert client.get(f"/v1/subjects/{USER}", headers=bearer(keys["api_key"])).status_code == 403


@pytest.mark.parametrize("targeted", [16, 0])
def test_legacy_plaintext_is_blanked_on_disk_day_by_day_or_table_wide(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch, targeted: int,
) -> None:
    """Events stored before encryption at the door hold plaintext: erasure blanks those on disk."""
    from datetime import UTC, datetime, timedelta

    from app.ports import EventRow
    from app.stores.clickhouse import events

    monkeypatch.setattr(events, "TARGETED_PARTITIONS", targeted)
    post(client, keys, [frontend("session_started"), frontend("session_started", user_id="bystander")])
    start = datetime(2025, 1, 1, 10, tzinfo=UTC)

    def legacy(user: str, day: int) -> EventRow:
        return EventRow(project=PROJECT, event="session_started", at=start + timedelta(days=day), received_at=start,
                        subject_id=subject_id(container, user), actor_kind="user", dedup_key=f"{user}-{day}",
                        room_id="", message_id="", platform="web", personal={"user_name": f"Plain {user}"},
                        properties={})

    # a backfill spanning 150 days (ClickHouse refuses >100 partitions per insert by default)
    container.events.insert([legacy(USER, d) for d in range(150)] + [legacy("bystander", 0)], "legacy")
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    rows = ch_rows(container)  # patch parts off: what is on disk
    assert len(rows) == 153
    plaintext = [r["user_name"] for r in rows if r["user_name"] and not r["user_name"].startswith("v1.")]
    assert plaintext == ["Plain bystander"]


def test_a_rejected_delivery_naming_the_user_in_escaped_form_goes_with_the_erasure(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock
) -> None:
    user = "ü/ser"
    # bodies that do not even parse are kept raw, escapes and all
    escaped = b'{"event": "x", "value": {"project": "partner-prod", "user_id": "\\u00fc\\/ser"}'
    other = b'{"event": "x", "value": {"project": "partner-prod", "user_id": "someone"}'
    for body in (escaped, other):
        assert client.post("/v1/events", content=body, headers=bearer(keys["webhook_token"])).status_code == 400
    post(client, keys, frontend("session_started", user))
    client.post("/v1/deletion-requests", json={"user_id": user, "mode": "immediate"}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    rejected = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    assert [r["body"] for r in rejected] == [other.decode()]
