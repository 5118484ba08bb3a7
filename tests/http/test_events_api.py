"""The events webhook with the platform's own example payloads."""

import copy
import json
import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import select

from app.bootstrap import Container
from app.domain.events import Actor
from tests.conftest import FakeClock
from tests.fixtures.platform import ADMIN, BACKEND, PROJECT, SESSION_STARTED, frontend
from tests.http.conftest import bearer


def post(client: TestClient[Any], keys: dict[str, str], body: Any) -> Any:
    return client.post("/v1/events", json=body, headers=bearer(keys["webhook_token"]))


def ch_rows(container: Container, where: str = "1", **params: Any) -> list[dict[str, Any]]:
    ch = container.clickhouse
    rows = ch.rows(f"SELECT * FROM events WHERE {where} ORDER BY at, event", parameters=params,
                   settings={"apply_patch_parts": 0})
    names = [r[0] for r in ch.rows("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                   "AND table = 'events' AND default_kind != 'MATERIALIZED' ORDER BY position")]
    return [dict(zip(names, r, strict=True)) for r in rows]


UNREADABLE = "<unreadable>"


def readable(container: Container, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as a reader holding the keys sees them: personal values decrypted, or
    UNREADABLE where the key is gone (erased)."""
    from app.domain.crypto import Undecryptable
    from app.domain.events import SEALED_COLUMNS

    with container.uow() as uow:
        projects = {name: pid for pid, name in uow.projects.all_names().items()}

        def owner(row: dict[str, Any]) -> str:
            if row["subject_id"].int:
                return str(row["subject_id"])
            return f"events:{projects[row['project']]}:{row['at'].date().isoformat()}"

        ciphers = container.keys.ciphers(uow, sorted({owner(r) for r in rows}), "analytics", create=False)
    opened = []
    for row in rows:
        cipher = ciphers.get(owner(row))
        row = dict(row)
        for column in SEALED_COLUMNS:
            if row[column]:
                try:
                    row[column] = cipher.decrypt(row[column], column.encode()) if cipher else UNREADABLE
                except Undecryptable:
                    row[column] = UNREADABLE
        opened.append(row)
    return opened


def opened_profile(container: Container, subject: str) -> tuple[str | None, str | None] | None:
    """(display name, avatar url) of a subject's profile, opened with its grace key."""
    from app.models import Profile
    from app.services.keys import GRACE, unsealed

    with container.uow() as uow:
        profile = uow.session.get(Profile, subject)
        if profile is None:
            return None
        assert all(v is None or v.startswith("v1.") for v in (profile.display_name, profile.avatar_url))  # sealed
        grace = container.keys.ciphers(uow, [subject], GRACE, create=False).get(subject)
        return unsealed(grace, profile.display_name, "display_name"), unsealed(grace, profile.avatar_url, "avatar_url")


def opened_text(container: Container, message_id: str, project_id: str | None = None) -> str | None:
    """A stored message's text, opened with its author's content key (it is stored sealed)."""
    from app.models import Message

    with container.uow() as uow:
        query = select(Message).where(Message.message_id == message_id)
        message = uow.session.scalar(query if project_id is None else query.where(Message.project_id == project_id))
        return None if message is None else open_text(container, message.subject_id, message.text, uow)


def linked_users(container: Container, uow: Any) -> dict[str, str]:
    """subject id -> platform user id of every subject still linked (ids are stored sealed)."""
    from app.models import Subject

    return container.identities.user_ids(uow, uow.session.scalars(select(Subject).where(Subject.user_key.is_not(None))))


def open_text(container: Container, author: str | None, stored: str | None, uow: Any = None) -> str | None:
    """A message text as stored (sealed) opened with its author's content key (read in `uow`,
    the caller's transaction, if given: SQLite allows one writer)."""
    from app.services.keys import CONTENT, MESSAGE_TEXT_AAD, unsealed

    if stored is None:
        return None
    assert stored.startswith("v1."), "message text stored in plaintext"
    if uow is None:
        with container.uow() as own:
            return open_text(container, author, stored, own)
    content = container.keys.ciphers(uow, [author or ""], CONTENT, create=False).get(author or "")
    return unsealed(content, stored, MESSAGE_TEXT_AAD.decode())


def subject_id(container: Container, user_key: str) -> str:
    with container.uow() as uow:
        project = uow.projects.by_name(PROJECT)
        assert project is not None
        subject = container.identities.find(uow, project.id, user_key)
        assert subject is not None
        return subject.id


def test_every_reference_example_is_accepted(client: TestClient[Any], keys: dict[str, str],
                                             container: Container) -> None:
    batch = [SESSION_STARTED, *BACKEND, *ADMIN]
    response = post(client, keys, batch)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(batch), "duplicates": 0, "rejected": [], "suppressed": 0}
    rows = ch_rows(container)
    assert len(rows) == len(batch)
    assert {r["event"] for r in rows} == {e["event"] for e in batch}


def test_frontend_event_is_keyed_by_subject_with_personal_columns_apart(client: TestClient[Any],
                                                                        keys: dict[str, str],
                                                                        container: Container) -> None:
    assert post(client, keys, SESSION_STARTED).status_code == 202
    (raw,) = ch_rows(container)
    assert raw["user_name"].startswith("v1.") and "John" not in repr(raw)  # ciphertext only
    (row,) = readable(container, [raw])
    sid = subject_id(container, "BUmXxFyNMNE6FUVhL+ECSQ==")
    assert str(row["subject_id"]) == sid and row["actor_kind"] == "user"
    assert row["at"].isoformat().startswith("2026-01-14T12:30:45.123")  # value.created_at
    assert (row["user_name"], row["nickname"], row["decrypted_user_id"]) == ("John Doe", "John Doe", "user_12345")
    assert row["user_agent"].startswith("Mozilla/5.0") and row["source_url"].startswith("https://chat")
    assert "on_air" not in repr(raw) and "1920x1080" not in repr(raw)  # unknown properties: sealed too
    props = json.loads(row["extra"])
    assert props["room_status"] == "on_air" and props["screen_size"] == "1920x1080"
    assert json.loads(row["properties"]) == {}  # no other user named
    assert "BUmXxFyNMNE6FUVhL+ECSQ==" not in json.dumps({k: str(v) for k, v in row.items()})


def test_backend_and_admin_actors_and_referenced_users_are_pseudonymised(client: TestClient[Any],
                                                                         keys: dict[str, str],
                                                                         container: Container) -> None:
    post(client, keys, [BACKEND[0], ADMIN[5]])  # user_join (external_user_id), admin_user_banned
    rows = {r["event"]: r for r in ch_rows(container)}
    assert str(rows["user_join"]["subject_id"]) == subject_id(container, "user_12345")
    banned = rows["admin_user_banned"]
    assert banned["actor_kind"] == "admin" and str(banned["subject_id"]) == subject_id(
        container, Actor("admin", "admin_001").key)
    props = json.loads(banned["properties"])
    assert props["banned_user_id"] == subject_id(container, "user_456")  # the other user, by subject id
    assert "user_456" not in banned["properties"]


def test_event_without_created_at_takes_the_receipt_time(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container, clock: FakeClock) -> None:
    post(client, keys, BACKEND[2])
    (row,) = ch_rows(container)
    assert row["at"].replace(tzinfo=None) == clock.now.replace(tzinfo=None)


def test_a_chat_user_named_like_an_admin_is_not_that_admin(client: TestClient[Any], keys: dict[str, str],
                                                           container: Container, clock: FakeClock) -> None:
    """User ids may hold any character: a chat user who calls themselves "admin:admin_001"
    neither renames admin_001 nor erases the admin's messages by deleting their own account."""
    post(client, keys, ADMIN[0])  # admin_001 sends msg_123
    impostor = "admin:admin_001"
    post(client, keys, [frontend("name_set", user_id=impostor, user_name="Impostor"),
                        frontend("delete_profile_confirmed", user_id=impostor)])
    admin = subject_id(container, Actor("admin", "admin_001").key)
    assert subject_id(container, impostor) != admin
    container.erasure.anonymise(clock.now)
    (request,) = client.get("/v1/deletion-requests", params={"user_id": impostor},
                            headers=bearer(keys["api_key"])).json()["items"]
    assert (request["status"], request["evidence"]["sql.messages"]) == ("in_grace", {"anonymised": 0})
    assert client.get("/v1/messages/msg_123", headers=bearer(keys["api_key"])).json()["state"] == "visible"
    with container.uow() as uow:
        profile = uow.profiles.get(admin)
        assert profile is None or profile.display_name is None or "Impostor" not in profile.display_name


def test_event_with_no_user_has_no_subject(client: TestClient[Any], keys: dict[str, str],
                                           container: Container) -> None:
    post(client, keys, BACKEND[8])  # text_translate
    (row,) = ch_rows(container)
    assert row["subject_id"] == uuid.UUID(int=0) and row["actor_kind"] == ""


def test_repeated_delivery_has_one_effect(client: TestClient[Any], keys: dict[str, str],
                                          container: Container) -> None:
    sent = frontend("message_sent", messageType="text", text="hello", message_id="m-1", room="16888417")
    for _ in range(3):
        assert post(client, keys, sent).json()["accepted"] == 1
    assert post(client, keys, [sent, sent]).status_code == 202
    assert len(ch_rows(container)) == 1
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).json()["state"] == "visible"


def test_bodies_that_are_not_json_are_dead_lettered(client: TestClient[Any], keys: dict[str, str]) -> None:
    response = client.post("/v1/events", content=b"{not json", headers=bearer(keys["webhook_token"]))
    assert response.status_code == 400 and "not valid JSON" in response.json()["rejected"][0]["detail"]
    assert response.json()["status_code"] == 400 and "nothing was accepted" in response.json()["detail"]
    assert {"status_code", "detail", "extra"} <= set(response.json())  # the common error body, and the counts
    rejected = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()
    assert rejected["items"][0]["body"] == "{not json" and rejected["items"][0]["reason"]
    for constant in ("NaN", "Infinity", "-Infinity"):  # Python reads them; JSON has no such values
        body = b'{"event": "session_time", "value": {"project": "partner-prod", "duration": %s}}' % constant.encode()
        refused = client.post("/v1/events", content=body, headers=bearer(keys["webhook_token"]))
        assert refused.status_code == 400 and "not valid JSON" in refused.json()["detail"]


def test_batch_limits(client: TestClient[Any], keys: dict[str, str]) -> None:
    too_many = post(client, keys, [BACKEND[2]] * 1001)
    assert too_many.status_code == 400 and "at most 1000" in too_many.json()["rejected"][0]["detail"]
    assert post(client, keys, []).status_code == 400
    huge = client.post("/v1/events", content=b"[" + b" " * (11 * 1024 * 1024) + b"]",
                       headers=bearer(keys["webhook_token"]))
    assert huge.status_code == 413 and "larger than 10 MiB" in huge.json()["detail"]


def test_invalid_envelopes_are_rejected_by_index_and_kept(client: TestClient[Any], keys: dict[str, str],
                                                          container: Container) -> None:
    other_project = copy.deepcopy(BACKEND[2])
    other_project["value"]["project"] = "someone-else"
    bad_time = copy.deepcopy(BACKEND[2])
    bad_time["value"]["created_at"] = "yesterday"
    batch = [BACKEND[2], {"event": "x"}, {"value": {}}, other_project, bad_time, "text", SESSION_STARTED]
    response = post(client, keys, batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    details = {r["index"]: r["detail"] for r in body["rejected"]}
    assert set(details) == {1, 2, 3, 4, 5}
    assert "value" in details[1] and "event" in details[2] and "project" in details[3]
    assert "created_at" in details[4]
    rejected = client.get("/v1/events/rejected", params={"limit": 2}, headers=bearer(keys["api_key"])).json()
    assert len(rejected["items"]) == 2 and rejected["next_cursor"]
    nothing = post(client, keys, [{"event": "x"}])
    assert nothing.status_code == 400 and nothing.json()["accepted"] == 0


def test_only_the_webhook_token_of_the_events_project_posts_events(client: TestClient[Any], keys: dict[str, str],
                                                                    container: Container) -> None:
    other = container.accounts.create_project("other")
    cross = client.post("/v1/events", json=BACKEND[2], headers=bearer(other.webhook_token))
    assert cross.status_code == 400 and "project" in cross.json()["rejected"][0]["detail"]
    assert client.post("/v1/events", json=BACKEND[2], headers=bearer(keys["api_key"])).status_code == 403
    assert client.post("/v1/events", json=BACKEND[2]).status_code == 401
    assert client.get("/v1/events/rejected", headers=bearer(keys["webhook_token"])).status_code == 403


def test_concurrent_webhook_calls_share_commits_and_lose_nothing(keys: dict[str, str],
                                                                 container: Container) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with container.uow() as uow:
        project = uow.projects.by_name(PROJECT)
        assert project is not None
    bodies = [json.dumps(frontend("session_started", f"user-{i % 7}", created_at=f"2026-01-14T12:00:{i:02d}Z"))
              for i in range(40)]
    bodies += [bodies[0]] * 5  # the same delivery, repeated concurrently
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: container.ingest.ingest(project.id, PROJECT, b.encode()), bodies))
    assert all(not r.nothing_accepted and r.accepted == 1 for r in results)
    assert len(ch_rows(container)) == 40


def test_user_ids_inside_lists_become_subject_ids(client: TestClient[Any], keys: dict[str, str],
                                                 container: Container) -> None:
    envelope = frontend("speakers_updated", speaker_user_ids=["user_1", "user_2"], banned_user_id="user_3")
    assert post(client, keys, envelope).status_code == 202
    (row,) = ch_rows(container)
    props = json.loads(row["properties"])
    assert props["speaker_user_ids"] == [subject_id(container, "user_1"), subject_id(container, "user_2")]
    assert props["banned_user_id"] == subject_id(container, "user_3")
    assert "user_1" not in row["properties"] and "user_3" not in row["properties"]
