"""Holds win over deletion requests; released holds let the work resume."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from app.bootstrap import Container
from jobs.registry import run_job
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import UNREADABLE, ch_rows, opened_text, post, readable
from tests.integration.test_deletion_requests import pid

USER = "BUmXxFyNMNE6FUVhL+ECSQ=="


def hold(client: TestClient[Any], keys: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/holds", json={"reason": "court order 12/2026", **body},
                           headers=bearer(keys["officer"]))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def request(client: TestClient[Any], keys: dict[str, str], mode: str = "grace") -> dict[str, Any]:
    return client.post("/v1/deletion-requests", json={"user_id": USER, "mode": mode},  # type: ignore[no-any-return]
                       headers=bearer(keys["api_key"])).json()


def status(client: TestClient[Any], keys: dict[str, str], request_id: str) -> dict[str, Any]:
    return client.get(f"/v1/deletion-requests/{request_id}",  # type: ignore[no-any-return]
                      headers=bearer(keys["api_key"])).json()


@pytest.mark.parametrize(("scope", "target"), [("user", USER), ("project", PROJECT)])
def test_a_held_user_is_not_altered_until_release(client: TestClient[Any], keys: dict[str, str],
                                                  container: Container, clock: FakeClock,
                                                  scope: str, target: str) -> None:
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    placed = hold(client, keys, scope=scope, target=target)
    created = request(client, keys, "immediate")
    summary = container.erasure.anonymise(clock.now)
    assert (summary.processed, summary.held) == (0, 1)
    held = status(client, keys, created["id"])
    assert held["status"] == "on_hold" and held["holds"] == [{"id": placed["id"], "scope": scope}]
    assert [r["user_name"] for r in readable(container, ch_rows(container))] == ["John Doe"]  # still readable
    msg = client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).json()
    assert msg["state"] == "visible"

    released = client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    assert released.status_code == 200 and released.json()["active"] is False
    clock.advance(minutes=1)
    assert container.erasure.anonymise(clock.now).processed == 1
    assert status(client, keys, created["id"])["status"] == "completed"
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).status_code == 404


def officer_get(client: TestClient[Any], keys: dict[str, str], path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=bearer(keys["officer"]))
    assert response.status_code == 200, response.text
    return response.json()


def test_what_a_room_hold_keeps_is_read_a_page_at_a_time(client: TestClient[Any], keys: dict[str, str],
                                                         container: Container) -> None:
    post(client, keys, [frontend("message_sent", text=f"line {n}", message_id=f"m-{n}", room="r-7")
                        for n in range(7)])
    placed = hold(client, keys, scope="room", target="r-7")
    path = f"/v1/holds/{placed['id']}/data"
    everything = officer_get(client, keys, path)
    assert len(everything["messages"]) == 7 and len(everything["events"]) == 7
    assert everything["next_cursor"] is None
    seen_messages, seen_events, cursor, pages = [], [], None, 0
    while True:
        page = officer_get(client, keys, path, limit=3, **({"cursor": cursor} if cursor else {}))
        assert len(page["messages"]) + len(page["events"]) <= 3
        seen_messages += [m["message_id"] for m in page["messages"]]
        seen_events += [e["message_id"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5  # 14 items, 3 a page
    assert seen_messages == [m["message_id"] for m in everything["messages"]]  # each once, in order
    assert seen_events == [e["message_id"] for e in everything["events"]]
    bad = client.get(path, params={"cursor": "zz"}, headers=bearer(keys["officer"]))
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]


def held_tokens(container: Container) -> tuple[list[tuple[str, str]], str | None]:
    """What is stored of message m-1 and the events of room r-7 (sealed), as bytes on record."""
    from sqlalchemy import select

    from app.models import Message

    events = sorted((r["dedup_key"], r["text"]) for r in container.events.covered(PROJECT, ["r-7"], ["m-1"]))
    with container.uow() as uow:
        return events, uow.session.scalar(select(Message.text).where(Message.message_id == "m-1"))


def two_rooms_then_a_hold(client: TestClient[Any], keys: dict[str, str], texts: tuple[str, str], scope: str,
                          target: str) -> dict[str, Any]:
    """m-1 in room r-7 and m-2 in room r-8 (both by USER), then the hold."""
    post(client, keys, [frontend("message_sent", text=texts[0], message_id="m-1", room="r-7"),
                        frontend("message_sent", text=texts[1], message_id="m-2", room="r-8")])
    return hold(client, keys, scope=scope, target=target)


@pytest.mark.parametrize(("scope", "target"), [("room", "r-7"), ("message", "m-1"), ("user", USER)])
def test_an_edit_of_a_held_message_leaves_the_held_text(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container, clock: FakeClock,
                                                        scope: str, target: str) -> None:
    placed = two_rooms_then_a_hold(client, keys, ("original", "other"), scope, target)
    clock.advance(seconds=5)
    edits = [frontend("message_changed", text="EDITED", message_id=m, room=room, created_at=clock.now.isoformat())
             for m, room in (("m-1", "r-7"), ("m-2", "r-8"))]
    assert post(client, keys, edits).json()["accepted"] == 2
    assert opened_text(container, "m-1") == "original"  # held: the text the hold found stays
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert "EDITED" not in [m["text"] for m in data["messages"]]
    assert opened_text(container, "m-2") == ("other" if scope == "user" else "EDITED")  # not held: edited
    held_edit = officer_get(client, keys, "/v1/audit", action="message.edit_held")["items"]
    assert [e["details"] for e in held_edit] == [{"message_id": "m-1", "holds": [placed["id"]]}] + (
        [{"message_id": "m-2", "holds": [placed["id"]]}] if scope == "user" else [])
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    clock.advance(seconds=5)
    again = frontend("message_changed", text="LATER", message_id="m-1", room="r-7", created_at=clock.now.isoformat())
    post(client, keys, [again])
    assert opened_text(container, "m-1") == "LATER"  # released: edits apply again


@pytest.mark.parametrize(("scope", "target"), [("room", "r-7"), ("message", "m-1")])
def test_a_room_or_message_hold_keeps_exactly_what_it_covers(client: TestClient[Any], keys: dict[str, str],
                                                             container: Container, clock: FakeClock,
                                                             scope: str, target: str) -> None:
    placed = two_rooms_then_a_hold(client, keys, ("evidence", "chatter"), scope, target)
    assert container.held.take() == {"sql.messages": 1, "clickhouse.events": 1}  # the job does it first
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")  # whose they are
    assert [(m["message_id"], m["user_id"]) for m in data["messages"]] == [("m-1", USER)]
    assert [(e["message_id"], e["user_id"]) for e in data["events"]] == [("m-1", USER)]
    before = held_tokens(container)
    created = request(client, keys, "immediate")
    summary = container.erasure.anonymise(clock.now)
    assert (summary.processed, summary.held) == (1, 0)  # the rest of the user goes on schedule
    done = status(client, keys, created["id"])
    assert done["status"] == "completed" and done["holds"] == []
    assert done["kept"] == [{"id": placed["id"], "scope": scope}]
    assert held_tokens(container) == before  # held values unchanged, bit for bit
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).status_code == 200
    assert client.get("/v1/messages/m-2", headers=bearer(keys["api_key"])).status_code == 404
    opened = {r["message_id"]: r["text"] for r in readable(container, ch_rows(container))}
    assert opened == {"m-1": UNREADABLE, "m-2": UNREADABLE}  # the user's own keys are gone
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    # the user is purged and unlinked, but the hold still says who wrote what it keeps
    assert [(m["text"], m["user_id"]) for m in data["messages"]] == [("evidence", USER)]
    assert [(e["message_id"], e["personal"]["text"], e["user_id"]) for e in data["events"]] == [
        ("m-1", "evidence", USER)]
    with container.uow() as uow:
        assert container.identities.find(uow, pid(container, PROJECT), USER) is None
    assert datetime.fromisoformat(data["events"][0]["at"]).utcoffset() == timedelta(0)
    assert officer_get(client, keys, "/v1/audit", action="hold.data_read")["items"][0]["details"] == {
        "hold_id": placed["id"], "messages": 1, "events": 1}

    # released: the user was erased (immediate) meanwhile, so the hold key goes, and the message
    # the hold alone kept is deleted as the erasure would have done; its events stay, anonymous
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    assert container.held.give_back() == 1
    after = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert after["messages"] == [] and after["events"] == []
    with container.uow() as uow:
        assert uow.holds.authors(placed["id"]) == {}  # gone with the hold's key
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).status_code == 404
    assert {r["message_id"] for r in ch_rows(container)} == {"m-1", "m-2"}
    details = officer_get(client, keys, "/v1/audit", action="hold.data_returned")["items"][0]["details"]
    assert (details["keys_destroyed"], details["sql.messages_deleted"]) == (1, 1)


def test_a_holds_data_is_readable_before_it_is_taken_and_where_another_hold_took_it(
        client: TestClient[Any], keys: dict[str, str], container: Container) -> None:
    """What a hold keeps opens whatever its sealing state: still under the author's keys (taken
    at the next erasure run), or under the key of another hold that covered it first."""
    post(client, keys, [frontend("message_sent", text="evidence", message_id="m-1", room="r-7"),
                        frontend("message_sent", text="other", message_id="m-2", room="r-7")])
    message = hold(client, keys, scope="message", target="m-1")
    data = officer_get(client, keys, f"/v1/holds/{message['id']}/data")
    assert [(m["message_id"], m["text"], m["user_id"]) for m in data["messages"]] == [("m-1", "evidence", USER)]
    assert [(e["message_id"], e["personal"]["text"]) for e in data["events"]] == [("m-1", "evidence")]
    room = hold(client, keys, scope="room", target="r-7")
    container.held.take()
    for placed, covered in ((message, ["m-1"]), (room, ["m-1", "m-2"])):
        data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
        assert sorted((m["message_id"], m["text"]) for m in data["messages"]) == [
            (m, {"m-1": "evidence", "m-2": "other"}[m]) for m in covered]
        assert sorted(e["message_id"] for e in data["events"]) == covered


def test_a_hold_still_names_the_author_after_a_grace_erasure_is_purged(client: TestClient[Any],
                                                                        keys: dict[str, str],
                                                                        container: Container,
                                                                        clock: FakeClock) -> None:
    """The purge destroys the user's link (and the request forgets the user id), but not the
    hold's own record of whose messages it keeps: that is part of what it keeps."""
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    placed = hold(client, keys, scope="room", target="r-7")
    container.held.take()
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    assert container.erasure.purge(clock.now + timedelta(days=31)).processed == 1
    assert status(client, keys, created["id"])["user_id"] is None
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert [(m["text"], m["user_id"]) for m in data["messages"]] == [("evidence", USER)]


def test_a_message_another_standing_hold_covers_stays_when_one_hold_ends(client: TestClient[Any],
                                                                         keys: dict[str, str],
                                                                         container: Container,
                                                                         clock: FakeClock) -> None:
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    room = hold(client, keys, scope="room", target="r-7")
    hold(client, keys, scope="message", target="m-1")
    container.held.take()
    created = request(client, keys, "immediate")
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "completed"
    client.delete(f"/v1/holds/{room['id']}", headers=bearer(keys["officer"]))
    assert container.held.give_back() == 1
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).status_code == 200  # still held


def test_a_released_hold_gives_an_active_users_data_back_to_their_keys(client: TestClient[Any],
                                                                     keys: dict[str, str],
                                                                     container: Container) -> None:
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    placed = hold(client, keys, scope="room", target="r-7")
    container.held.take()
    assert [r["text"] for r in readable(container, ch_rows(container))] == [UNREADABLE]  # under the hold's key
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    assert container.held.give_back() == 1
    assert [r["text"] for r in readable(container, ch_rows(container))] == ["evidence"]
    assert opened_text(container, "m-1") == "evidence"
    with container.uow() as uow:
        assert uow.keys.having([placed["id"]], "hold") == set()
    assert container.held.give_back() == 0  # settled once


def test_a_sealing_that_never_finished_is_settled_when_the_hold_ends(client: TestClient[Any],
                                                                     keys: dict[str, str], container: Container,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the hold's key was made and the events sealed under it, before the hold
    was marked sealed: once the hold ends, those values still go back to their subject's key,
    and the hold key is destroyed (else they would stay readable under it for good)."""
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    placed = hold(client, keys, scope="room", target="r-7")

    def crash(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("killed mid-sealing")

    with monkeypatch.context() as patched:
        patched.setattr(container.held, "_take_messages", crash)
        with pytest.raises(RuntimeError, match="killed mid-sealing"):
            container.held.take()
    assert [r["text"] for r in readable(container, ch_rows(container))] == [UNREADABLE]  # under the hold's key
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    assert container.held.give_back() == 1
    assert [r["text"] for r in readable(container, ch_rows(container))] == ["evidence"]
    with container.uow() as uow:
        assert uow.keys.having([placed["id"]], "hold") == set()
    assert container.held.give_back() == 0


def test_data_arriving_in_a_held_room_is_taken_before_the_users_erasure(client: TestClient[Any],
                                                                       keys: dict[str, str],
                                                                       container: Container,
                                                                       clock: FakeClock) -> None:
    placed = hold(client, keys, scope="room", target="r-7")
    container.held.take()  # sealed (nothing yet): from now on the hold keeps, it does not stop
    post(client, keys, frontend("message_sent", text="late evidence", message_id="m-9", room="r-7"))
    created = request(client, keys, "immediate")
    container.erasure.anonymise(clock.now)  # takes what arrived, then erases the rest
    assert status(client, keys, created["id"])["kept"] == [{"id": placed["id"], "scope": "room"}]
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert [m["text"] for m in data["messages"]] == ["late evidence"]


def test_a_message_arriving_during_the_run_that_erases_its_author_is_kept(client: TestClient[Any],
                                                                          keys: dict[str, str],
                                                                          container: Container,
                                                                          clock: FakeClock) -> None:
    """After the run took what the hold covers and before it destroys the author's keys, a
    message arrives in the held room: the erasure's own transaction takes it too."""
    placed = hold(client, keys, scope="room", target="r-7")
    container.held.take()
    created = request(client, keys, "immediate")
    settle = container.erasure._before_run

    def settle_then_a_message_arrives() -> None:
        settle()
        post(client, keys, frontend("message_sent", text="in-flight evidence", message_id="m-8", room="r-7"))

    container.erasure._before_run = settle_then_a_message_arrives
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "completed"
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert [m["text"] for m in data["messages"]] == ["in-flight evidence"]


@pytest.mark.parametrize("mode", ["grace", "immediate"])
def test_an_event_arriving_during_the_run_that_erases_its_user_is_kept(client: TestClient[Any],
                                                                       keys: dict[str, str],
                                                                       container: Container,
                                                                       clock: FakeClock, mode: str) -> None:
    """The same window for analytics events: they wait in the outbox, which the run drained
    before it started. An event in a held room is sealed under the hold's key at the door, so
    the user's erasure (which destroys their analytics key) leaves it readable to the officer."""
    placed = hold(client, keys, scope="room", target="r-7")
    container.held.take()
    created = request(client, keys, mode)
    settle = container.erasure._before_run

    def settle_then_an_event_arrives() -> None:
        settle()
        post(client, keys, [frontend("message_sent", text="in-flight evidence", message_id="m-8", room="r-7"),
                            frontend("message_sent", text="chatter", message_id="m-9", room="r-8")])

    container.erasure._before_run = settle_then_an_event_arrives
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["kept"] == [{"id": placed["id"], "scope": "room"}]
    container.outbox.drain()
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert [e["personal"].get("text") for e in data["events"]] == ["in-flight evidence"]
    # exactly what the hold covers: the user's event elsewhere is unreadable with their key gone
    assert sorted(r["text"] for r in readable(container, ch_rows(container))) == [UNREADABLE, UNREADABLE]


def test_a_hold_whose_data_is_not_sealed_yet_stops_the_request(client: TestClient[Any], keys: dict[str, str],
                                                               container: Container, clock: FakeClock) -> None:
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    hold(client, keys, scope="room", target="r-7")
    created = request(client, keys, "immediate")
    container.erasure._before_run = lambda: (_ for _ in ()).throw(RuntimeError("ClickHouse down"))
    assert container.erasure.anonymise(clock.now).held == 1
    assert status(client, keys, created["id"])["status"] == "on_hold"
    assert opened_text(container, "m-1") == "evidence"


def test_a_hold_placed_during_grace_blocks_the_purge(client: TestClient[Any], keys: dict[str, str],
                                                     container: Container, clock: FakeClock) -> None:
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    placed = hold(client, keys, scope="user", target=USER)
    summary = container.erasure.purge(clock.now + timedelta(days=31))
    assert summary.held == 1 and status(client, keys, created["id"])["status"] == "on_hold"
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    clock.advance(days=31)
    container.erasure.purge(clock.now)
    assert status(client, keys, created["id"])["status"] == "completed"


def test_a_request_on_hold_follows_releases_before_its_purge_is_due(client: TestClient[Any], keys: dict[str, str],
                                                                    container: Container, clock: FakeClock) -> None:
    """`holds` lists the holds that stop the request now: each release shows at the next run,
    and once none is left the request is back in grace, long before its purge is due."""
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    user, project = hold(client, keys, scope="user", target=USER), hold(client, keys, scope="project", target=PROJECT)
    container.erasure.purge(clock.now + timedelta(days=31))  # a run ahead of the clock: both stop it
    assert {h["id"] for h in status(client, keys, created["id"])["holds"]} == {user["id"], project["id"]}
    client.delete(f"/v1/holds/{project['id']}", headers=bearer(keys["officer"]))
    clock.advance(minutes=1)
    assert container.erasure.purge(clock.now).held == 1
    held = status(client, keys, created["id"])
    assert held["status"] == "on_hold" and held["holds"] == [{"id": user["id"], "scope": "user"}]
    client.delete(f"/v1/holds/{user['id']}", headers=bearer(keys["officer"]))
    clock.advance(minutes=1)
    assert container.erasure.purge(clock.now).processed == 0  # resumed, and not due yet
    resumed = status(client, keys, created["id"])
    assert (resumed["status"], resumed["holds"]) == ("in_grace", [])
    container.erasure.purge(clock.now + timedelta(days=31))
    assert status(client, keys, created["id"])["status"] == "completed"


@pytest.mark.parametrize("scope", ["user", "project"])
def test_a_whole_user_hold_placed_during_grace_puts_the_request_on_hold_at_once(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock, scope: str) -> None:
    """Not only when its purge comes due: partners and officers see `on_hold` and the hold."""
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    placed = hold(client, keys, scope=scope, target=USER if scope == "user" else PROJECT)
    assert container.erasure.purge(clock.now).held == 1  # the run the placement kicks; purge not due
    held = status(client, keys, created["id"])
    assert (held["status"], held["holds"]) == ("on_hold", [{"id": placed["id"], "scope": scope}])
    assert officer_get(client, keys, "/v1/audit", action="deletion_request.held")["items"]
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    clock.advance(minutes=1)
    container.erasure.purge(clock.now)
    assert status(client, keys, created["id"])["status"] == "in_grace"  # back in grace, restorable
    assert client.post(f"/v1/deletion-requests/{created['id']}/restore",
                       headers=bearer(keys["api_key"])).json()["status"] == "restored"


def test_a_request_restored_while_on_hold_lists_no_hold(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container, clock: FakeClock) -> None:
    """The user may come back during grace, held or not (a restore deletes nothing); once
    restored the request is closed and no hold stops it, before or after the hold's release."""
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    placed = hold(client, keys, scope="user", target=USER)
    container.erasure.purge(clock.now)
    assert status(client, keys, created["id"])["status"] == "on_hold"
    restored = client.post(f"/v1/deletion-requests/{created['id']}/restore", headers=bearer(keys["api_key"]))
    assert restored.status_code == 200 and (restored.json()["status"], restored.json()["holds"]) == ("restored", [])
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    clock.advance(minutes=1)
    container.erasure.purge(clock.now + timedelta(days=31))
    after = status(client, keys, created["id"])
    assert (after["status"], after["holds"]) == ("restored", [])


def test_release_delay_from_the_policy_postpones_the_work(client: TestClient[Any], keys: dict[str, str],
                                                          container: Container, clock: FakeClock) -> None:
    from dataclasses import replace

    container.policies.projects[PROJECT] = replace(container.policies.default, hold_release_delay_hours=24)
    placed = hold(client, keys, scope="user", target=USER)
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    clock.advance(hours=23)
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "on_hold"
    clock.advance(hours=2)
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "in_grace"


def test_expired_hold_no_longer_blocks(client: TestClient[Any], keys: dict[str, str], container: Container,
                                       clock: FakeClock) -> None:
    hold(client, keys, scope="user", target=USER, expires_at=(clock.now + timedelta(hours=1)).isoformat())
    created = request(client, keys)
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "on_hold"
    clock.advance(hours=2)
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "in_grace"


def test_a_job_run_ahead_of_the_clock_does_not_see_a_hold_as_expired(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock) -> None:
    """`lethe jobs run all --now <next year>` while a hold stands until next month: the hold
    stands (it is a fact of the real world, not of the job's clock), so nothing it covers is
    touched, whatever the run's `now` says; it ends when the clock reaches its expiry."""
    post(client, keys, frontend("message_sent", text="evidence", message_id="m-1", room="r-7"))
    hold(client, keys, scope="user", target=USER, expires_at=(clock.now + timedelta(days=10)).isoformat())
    created = request(client, keys, "immediate")
    ahead = clock.now + timedelta(days=400)
    for job in ("anonymise", "purge", "retention", "message_feed", "offboarding"):
        assert run_job(container, job, ahead)["processed"] == 0, job
    assert status(client, keys, created["id"])["status"] == "on_hold"
    assert [r["user_name"] for r in readable(container, ch_rows(container))] == ["John Doe"]
    assert client.get("/v1/messages/m-1", headers=bearer(keys["api_key"])).json()["state"] == "visible"
    clock.advance(days=11)  # the hold's expiry, by the clock
    assert container.erasure.anonymise(clock.now).processed == 1
    assert status(client, keys, created["id"])["status"] == "completed"


def test_holds_api_lists_filters_and_audits(client: TestClient[Any], keys: dict[str, str],
                                            container: Container) -> None:
    first = hold(client, keys, scope="user", target=USER, reference="case-1")
    hold(client, keys, scope="room", target="r-1")
    client.delete(f"/v1/holds/{first['id']}", headers=bearer(keys["officer"]))
    again = client.delete(f"/v1/holds/{first['id']}", headers=bearer(keys["officer"]))
    assert again.status_code == 409
    everything = client.get("/v1/holds", headers=bearer(keys["officer"])).json()["items"]
    assert len(everything) == 2  # released holds stay on record
    active = client.get("/v1/holds", params={"active": "true"}, headers=bearer(keys["officer"])).json()["items"]
    assert [h["scope"] for h in active] == ["room"]
    inactive = client.get("/v1/holds", params={"active": "false"}, headers=bearer(keys["officer"])).json()
    assert [h["id"] for h in inactive["items"]] == [first["id"]]
    audit = client.get("/v1/audit", params={"action": "hold.placed"}, headers=bearer(keys["officer"])).json()
    assert len(audit["items"]) == 2 and USER not in str(audit)
    assert client.get("/v1/audit", params={"action": "hold.released"},
                      headers=bearer(keys["officer"])).json()["items"][0]["details"]["hold_id"] == first["id"]
    # the user's own trail shows the user hold placed and released (by keyed hash, as every entry)
    trail = client.get("/v1/audit", params={"user_id": USER}, headers=bearer(keys["officer"])).json()["items"]
    assert [(e["action"], e["details"]["hold_id"]) for e in trail] == [("hold.placed", first["id"]),
                                                                       ("hold.released", first["id"])]


def test_hold_validation_and_access(client: TestClient[Any], keys: dict[str, str], container: Container) -> None:
    bad = client.post("/v1/holds", json={"scope": "planet", "target": "x", "reason": "r"},
                      headers=bearer(keys["officer"]))
    assert bad.status_code == 400 and "scope" in bad.json()["detail"]
    assert client.post("/v1/holds", json={"scope": "user", "target": "x", "reason": "r"},
                       headers=bearer(keys["api_key"])).status_code == 403
    other = container.accounts.create_project("other")
    stranger = container.accounts.create_officer("oscar", ["other"]).token
    placed = hold(client, keys, scope="user", target=USER)
    assert client.delete(f"/v1/holds/{placed['id']}", headers=bearer(stranger)).status_code == 404
    assert other.api_key
    past = client.post("/v1/holds", json={"scope": "user", "target": "x", "reason": "r",
                                          "expires_at": "2000-01-01T00:00:00Z"}, headers=bearer(keys["officer"]))
    assert past.status_code == 400 and "expires_at" in past.json()["detail"]


@pytest.mark.parametrize("scope", ["user", "project"])
def test_a_user_or_project_hold_shows_the_users_it_keeps(client: TestClient[Any], keys: dict[str, str],
                                                        container: Container, scope: str) -> None:
    post(client, keys, [frontend("name_set"),
                        frontend("message_sent", text="evidence", message_id="m-1", room="r-7"),
                        frontend("message_sent", "u-other", text="chatter", message_id="m-2", room="r-8")])
    placed = hold(client, keys, scope=scope, target=USER if scope == "user" else PROJECT)
    path = f"/v1/holds/{placed['id']}/data"
    if scope == "user":
        (user,) = officer_get(client, keys, path)["users"]
    else:  # a page at a time: both users, each once
        first = officer_get(client, keys, path, limit=1)
        second = officer_get(client, keys, path, limit=1, cursor=first["next_cursor"])
        assert second["next_cursor"] is None and len(first["users"]) == len(second["users"]) == 1
        by_id = {u["user_id"]: u for u in first["users"] + second["users"]}
        assert set(by_id) == {USER, "u-other"}
        assert [m["text"] for m in by_id["u-other"]["messages"]] == ["chatter"]
        user = by_id[USER]
    assert user["user_id"] == USER and user["profile"]["display_name"] == "John Doe"
    assert [m["text"] for m in user["messages"]] == ["evidence"]
    assert "John Doe" in {e["personal"].get("user_name") for e in user["events"]}  # opened, not ciphertext
    read = officer_get(client, keys, "/v1/audit", action="hold.data_read")["items"]
    assert read and read[-1]["details"]["hold_id"] == placed["id"] and "evidence" not in str(read)


def test_a_held_room_keeps_what_a_user_being_erased_says_in_it(client: TestClient[Any], keys: dict[str, str],
                                                               container: Container, clock: FakeClock) -> None:
    """During grace the user is hidden and their new events lose their personal values at the
    door; in a held room the hold keeps them instead, under its own key."""
    placed = hold(client, keys, scope="room", target="r-7")
    container.held.take()
    created = request(client, keys, "grace")
    container.erasure.anonymise(clock.now)
    assert status(client, keys, created["id"])["status"] == "in_grace"
    post(client, keys, [frontend("message_sent", text="said while held", message_id="m-8", room="r-7"),
                        frontend("message_sent", text="said elsewhere", message_id="m-9", room="r-8")])
    container.outbox.drain()
    data = officer_get(client, keys, f"/v1/holds/{placed['id']}/data")
    assert [e["personal"].get("text") for e in data["events"]] == ["said while held"]
    elsewhere = [r for r in ch_rows(container) if r["message_id"] == "m-9"]
    assert [r["text"] for r in elsewhere] == [""]  # dropped at the door: nothing stored, sealed or not


def test_placing_or_releasing_a_hold_kicks_both_erasure_jobs(client: TestClient[Any], keys: dict[str, str],
                                                             container: Container,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A request held past its grace resumes in purge: a release must not wait for purge's next
    periodic run (15 minutes) to show it."""
    kicked: list[str] = []
    monkeypatch.setattr(container, "kick", kicked.append)
    placed = hold(client, keys, scope="user", target=USER)
    assert kicked == ["anonymise", "purge"]
    client.delete(f"/v1/holds/{placed['id']}", headers=bearer(keys["officer"]))
    assert kicked == ["anonymise", "purge"] * 2
