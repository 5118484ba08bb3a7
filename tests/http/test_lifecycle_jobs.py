"""Message feed, complaint resolution, retention (the 13-month cap) and offboarding."""

import copy
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from app.bootstrap import Container
from app.domain.requests import add_months
from app.models import DeadLetter, DeletionRequest, Message
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import ch_rows, linked_users, open_text, post, readable

USER = "BUmXxFyNMNE6FUVhL+ECSQ=="


def message(client: TestClient[Any], keys: dict[str, str], message_id: str) -> Any:
    return client.get(f"/v1/messages/{message_id}", headers=bearer(keys["api_key"]))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_deleted_message_leaves_the_feed_unless_reported(client: TestClient[Any], keys: dict[str, str],
                                                         container: Container, clock: FakeClock) -> None:
    t = clock.now
    post(client, keys, [frontend("message_sent", text="a", message_id="m-1", room="r", created_at=iso(t)),
                        frontend("message_sent", text="b", message_id="m-2", room="r", created_at=iso(t))])
    post(client, keys, [frontend("message_deleted", message_id="m-1", created_at=iso(t)),
                        frontend("message_deleted", message_id="m-2", created_at=iso(t)),
                        frontend("report_sent", message_id="m-2", reportType="Spam", user_id="reporter",
                                 created_at=iso(t))])
    assert container.message_feed.run(t + timedelta(days=29)).processed == 0
    summary = container.message_feed.run(t + timedelta(days=30))
    assert summary.processed == 1
    assert message(client, keys, "m-1").json()["state"] == "removed"
    with container.uow() as uow:
        assert uow.session.scalar(select(Message.text).where(Message.message_id == "m-1")) is None
    assert message(client, keys, "m-2").json()["state"] == "reported"
    resolved = client.post("/v1/messages/m-2/complaints/resolve", headers=bearer(keys["api_key"]))
    assert resolved.status_code == 200 and resolved.json()["state"] == "archived"
    assert resolved.json()["open_complaints"] == 0
    assert container.message_feed.run(t + timedelta(days=60)).processed == 0  # archived stays archived
    # a new complaint on an archived message: reported again until it is processed in turn
    clock.advance(days=61)
    post(client, keys, frontend("report_sent", message_id="m-2", reportType="Spam", user_id="another-reporter",
                                created_at=iso(clock.now)))
    again = message(client, keys, "m-2").json()
    assert (again["state"], again["open_complaints"]) == ("reported", 1)
    assert client.post("/v1/messages/m-2/complaints/resolve", headers=bearer(keys["api_key"])).json()["state"] == \
        "archived"


def test_feed_days_come_from_the_policy(client: TestClient[Any], keys: dict[str, str], container: Container,
                                        clock: FakeClock) -> None:
    container.policies.projects[PROJECT] = replace(container.policies.default, message_feed_days=7)
    post(client, keys, frontend("message_sent", text="a", message_id="m-1", room="r", created_at=iso(clock.now)))
    post(client, keys, frontend("message_deleted", message_id="m-1", created_at=iso(clock.now)))
    assert container.message_feed.run(clock.now + timedelta(days=7)).processed == 1


def test_held_message_stays_in_the_feed(client: TestClient[Any], keys: dict[str, str], container: Container,
                                        clock: FakeClock) -> None:
    post(client, keys, frontend("message_sent", text="a", message_id="m-1", room="r", created_at=iso(clock.now)))
    post(client, keys, frontend("message_deleted", message_id="m-1", created_at=iso(clock.now)))
    client.post("/v1/holds", json={"scope": "message", "target": "m-1", "reason": "inquiry"},
                headers=bearer(keys["officer"]))
    summary = container.message_feed.run(clock.now + timedelta(days=31))
    assert (summary.processed, summary.held) == (0, 1)
    assert message(client, keys, "m-1").json()["state"] == "deleted"


def test_grace_days_come_from_the_policy(client: TestClient[Any], keys: dict[str, str], container: Container,
                                         clock: FakeClock) -> None:
    container.policies.projects[PROJECT] = replace(container.policies.default, grace_days=7)
    body = client.post("/v1/deletion-requests", json={"user_id": "u"}, headers=bearer(keys["api_key"])).json()
    assert body["grace_until"] == (clock.now + timedelta(days=7)).isoformat()


def deliver_as_sent(client: TestClient[Any], keys: dict[str, str], clock: FakeClock,
                    envelopes: list[dict[str, Any]]) -> None:
    """Each event received a minute after it happened, as the platform sends them (an event
    older than the cap when it arrives is refused), then the clock is back where it was."""
    now = clock.now
    for envelope in envelopes:
        clock.now = datetime.fromisoformat(envelope["value"]["created_at"]) + timedelta(minutes=1)
        assert post(client, keys, envelope).json()["accepted"] == 1
    clock.now = now


def seed_months(client: TestClient[Any], keys: dict[str, str], clock: FakeClock) -> None:
    """One session event per user per month for 14 months; an old message and a recent one."""
    now = clock.now
    batch = []
    for months_ago in range(14):
        at = add_months(now, -months_ago) - timedelta(days=1)
        for user in ("u-a", "u-b"):
            batch.append(frontend("session_started", user, created_at=iso(at)))
    old = add_months(now, -13) - timedelta(days=2)
    batch += [frontend("message_sent", "u-a", text="old", message_id="m-old", room="r", created_at=iso(old)),
              frontend("message_sent", "u-a", text="new", message_id="m-new", room="r",
                       created_at=iso(now - timedelta(days=3)))]
    deliver_as_sent(client, keys, clock, batch)


def test_retention_enforces_the_cap_and_keeps_aggregates(client: TestClient[Any], keys: dict[str, str],
                                                         container: Container, clock: FakeClock) -> None:
    now = clock.now = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    seed_months(client, keys, clock)
    cutoff = add_months(now, -13)
    old_rows = [r for r in ch_rows(container) if r["at"].replace(tzinfo=UTC) < cutoff]
    assert len(old_rows) == 3  # two sessions and the old message, one day before the cap
    summary = container.retention.run(now)
    assert summary.stores["clickhouse.events"] == 3 and summary.stores["clickhouse.partitions_dropped"] >= 1
    remaining = ch_rows(container)
    assert min(r["at"].date() for r in remaining) >= cutoff.date()
    assert message(client, keys, "m-old").status_code == 404
    assert message(client, keys, "m-new").json()["state"] == "visible"
    old_day = (cutoff - timedelta(days=2)).date()
    metrics = container.event_lifecycle.metrics(PROJECT, old_day, old_day + timedelta(days=1))
    assert metrics == [{"day": old_day, "dau": 1, "wau": 1, "mau": 1, "messages": 1, "reactions": 0, "events": 1}]
    day = (cutoff - timedelta(days=1)).date()
    assert container.event_lifecycle.metrics(PROJECT, day, day + timedelta(days=1))[0]["dau"] == 2
    again = container.retention.run(now)  # idempotent
    assert again.stores["clickhouse.events"] == 0


def test_retention_keeps_held_rows_in_an_expired_partition(client: TestClient[Any], keys: dict[str, str],
                                                          container: Container, clock: FakeClock) -> None:
    now = clock.now = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    seed_months(client, keys, clock)
    client.post("/v1/holds", json={"scope": "user", "target": "u-a", "reason": "litigation"},
                headers=bearer(keys["officer"]))
    summary = container.retention.run(now)
    cutoff = add_months(now, -13)
    old = [r for r in ch_rows(container) if r["at"].replace(tzinfo=UTC) < cutoff]
    assert len(old) == 2 and summary.stores["clickhouse.events"] == 1  # u-b's old session went
    assert summary.held >= 2  # the held user's old event rows (and message) are reported as held
    assert message(client, keys, "m-old").status_code == 200  # the held user's old message stays


def test_retention_erases_users_idle_for_the_whole_cap(client: TestClient[Any], keys: dict[str, str],
                                                       container: Container, clock: FakeClock) -> None:
    now = clock.now = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    deliver_as_sent(client, keys, clock, [
        frontend("session_started", "idle", created_at=iso(add_months(now, -14))),
        frontend("session_started", "busy", created_at=iso(now - timedelta(days=1)))])
    summary = container.retention.run(now)
    assert summary.stores["sql.retention_requests"] == 1
    with container.uow() as uow:
        users = linked_users(container, uow)
        sources = [(users[s], source, mode) for s, source, mode in uow.session.execute(
            select(DeletionRequest.subject_id, DeletionRequest.source, DeletionRequest.mode))]
    assert sources == [("idle", "retention", "immediate")]
    container.erasure.anonymise(now)
    with container.uow() as uow:
        assert sorted(linked_users(container, uow).values()) == ["busy"]


def test_retention_deletes_old_dead_letters(client: TestClient[Any], keys: dict[str, str], container: Container,
                                            clock: FakeClock) -> None:
    client.post("/v1/events", content=b"garbage naming QZJ-user", headers=bearer(keys["webhook_token"]))
    with container.uow() as uow:
        (stored,) = uow.session.scalars(select(DeadLetter.body))
    assert stored.startswith("v1.") and "QZJ" not in stored  # sealed under the day's key
    (entry,) = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    assert entry["body"] == "garbage naming QZJ-user"  # the partner reads it opened
    container.retention.run(clock.now + timedelta(days=29))
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(DeadLetter)) == 1
    summary = container.retention.run(clock.now + timedelta(days=31))
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(DeadLetter)) == 0
        assert uow.keys.owners_between("deadletters:", "deadletters:\uffff", "dead_letters") == []
    assert summary.stores["sql.dead_letters"] == 1


def _dead_letter_tokens(container: Container) -> dict[str, str]:
    with container.uow() as uow:
        return {row.id: row.body for row in uow.session.scalars(select(DeadLetter))}


def _opens(container: Container, token: str) -> bool:
    """Whether any live dead-letter key of the project opens `token` (what a reader of the
    database's files could do with a deleted row's bytes, on PostgreSQL)."""
    from app.domain.crypto import Undecryptable
    from app.services.dead_letters import BODY
    from app.services.keys import DEAD_LETTERS

    with container.uow() as uow:
        owners = uow.keys.owners_between("deadletters:", "deadletters:\uffff", DEAD_LETTERS)
        ciphers = container.keys.ciphers(uow, owners, DEAD_LETTERS, create=False)
    for cipher in ciphers.values():
        try:
            cipher.decrypt(token, BODY.encode())
            return True
        except Undecryptable:
            continue
    return False


@pytest.mark.parametrize("held", [False, True])
def test_an_erased_users_dead_letters_leave_no_readable_bytes(client: TestClient[Any], keys: dict[str, str],
                                                              container: Container, clock: FakeClock,
                                                              held: bool) -> None:
    """The DELETE leaves the row's bytes in PostgreSQL's files; its day's key, which the
    bystanders' entries of that day share, would still open them: the rest of the day goes
    under a new key and the old one is destroyed. Unless a hold covers an entry of that day:
    held bytes do not change, so the day keeps its key."""
    if held:
        client.post("/v1/holds", json={"scope": "user", "target": "bystander", "reason": "regulator"},
                    headers=bearer(keys["officer"]))
    for body in (b"garbage naming erased-one", b"garbage naming bystander"):
        client.post("/v1/events", content=body, headers=bearer(keys["webhook_token"]))
    before = _dead_letter_tokens(container)
    erased_token = next(t for i, t in before.items() if _body_of(client, keys, i) == "garbage naming erased-one")
    client.post("/v1/deletion-requests", json={"user_id": "erased-one", "mode": "immediate"},
                headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    after = _dead_letter_tokens(container)
    assert len(after) == 1 and set(after) < set(before)  # the bystander's entry only
    ((kept_id, kept_token),) = after.items()
    (entry,) = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    assert entry["body"] == "garbage naming bystander"  # still readable to the partner
    if held:
        assert kept_token == before[kept_id]  # held bytes unchanged
        assert _opens(container, erased_token)  # the price: readable until the day's key goes
    else:
        assert kept_token != before[kept_id]  # sealed again, under a new day key
        assert not _opens(container, erased_token)  # the erased user's old bytes open with no key


def test_a_dead_letter_that_also_names_a_held_user_survives_the_erasure(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock) -> None:
    """The erasure deletes the rejected deliveries that name its user, except one a standing
    hold keeps because it names the held user too; the request still completes (the kept entry
    is the hold's, not a residue)."""
    client.post("/v1/holds", json={"scope": "user", "target": "held-one", "reason": "regulator"},
                headers=bearer(keys["officer"]))
    for body in (b"garbage naming erased-one and held-one", b"garbage naming erased-one alone"):
        client.post("/v1/events", content=body, headers=bearer(keys["webhook_token"]))
    created = client.post("/v1/deletion-requests", json={"user_id": "erased-one", "mode": "immediate"},
                          headers=bearer(keys["api_key"])).json()
    container.erasure.anonymise(clock.now)
    done = client.get(f"/v1/deletion-requests/{created['id']}", headers=bearer(keys["api_key"])).json()
    assert done["status"] == "completed" and done["evidence"]["sql.dead_letters"]["residual"] == 0
    items = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    assert [e["body"] for e in items] == ["garbage naming erased-one and held-one"]


def _body_of(client: TestClient[Any], keys: dict[str, str], entry_id: str) -> str:
    items = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    return str(next(e["body"] for e in items if e["id"] == entry_id))


@pytest.mark.parametrize("job", ["retention", "offboarding"])
def test_dead_letters_naming_a_held_user_stay_readable(client: TestClient[Any], keys: dict[str, str],
                                                      container: Container, clock: FakeClock, job: str) -> None:
    """A user hold keeps what erasure would count as the user's: the rejected deliveries that
    name them (here in an escaped form), through retention and offboarding alike."""
    client.post("/v1/holds", json={"scope": "user", "target": "u/held", "reason": "regulator"},
                headers=bearer(keys["officer"]))
    for body in (b'{"event": "x", "value": {"user_id": "u\\/held"', b"garbage naming someone-else"):
        client.post("/v1/events", content=body, headers=bearer(keys["webhook_token"]))
    if job == "offboarding":
        container.accounts.offboard_project(PROJECT)
        summary = container.offboarding.run(clock.now)
    else:
        summary = container.retention.run(clock.now + timedelta(days=31))
    assert summary.stores["sql.dead_letters"] == 1  # someone-else's
    with container.uow() as uow:
        (kept,) = uow.session.scalars(select(DeadLetter))
        opened = container.dead_letters.mentioning(uow, kept.project_id, ["u/held"])
    assert opened == {"u/held": [kept.id]}  # still there, and its day key still opens it

def test_offboarding_revokes_keys_and_deletes_everything_but_held_data(client: TestClient[Any],
                                                                       keys: dict[str, str], container: Container,
                                                                       clock: FakeClock) -> None:
    other = container.accounts.create_project("other-partner")
    post(client, keys, [frontend("message_sent", "u-a", text="a", message_id="m-a", room="r"),
                        frontend("message_sent", "u-b", text="b", message_id="m-b", room="r"),
                        frontend("name_set", "u-a", user_name="A")])
    client.post("/v1/events", json={"event": "session_started", "value": {"project": "other-partner",
                                                                          "user_id": "x"}},
                headers=bearer(other.webhook_token))
    client.post("/v1/holds", json={"scope": "user", "target": "u-b", "reason": "regulator"},
                headers=bearer(keys["officer"]))
    days = sorted({r["at"].date() for r in ch_rows(container)})
    for day in days:  # both partners' daily metrics
        container.event_lifecycle.aggregate(day, clock.now)
    asked = {user: client.post("/v1/deletion-requests", json={"user_id": user},
                               headers=bearer(keys["api_key"])).json()["id"] for user in ("u-a", "u-b")}
    container.erasure.anonymise(clock.now)  # u-a in grace; u-b on hold (the user hold)
    container.accounts.offboard_project(PROJECT)
    assert client.get("/v1/deletion-requests", headers=bearer(keys["api_key"])).status_code == 401
    assert client.post("/v1/events", json=frontend("session_started"),
                       headers=bearer(keys["webhook_token"])).status_code == 401
    summary = container.offboarding.run(clock.now)
    assert summary.processed == 1 and summary.held == 1
    rows = ch_rows(container)
    assert {r["project"] for r in rows} == {PROJECT, "other-partner"}
    assert [r["message_id"] for r in rows if r["project"] == PROJECT] == ["m-b"]  # the held user's event
    with container.uow() as uow:
        messages = list(uow.session.scalars(select(Message.message_id)))
        linked = linked_users(container, uow).values()
    assert messages == ["m-b"] and sorted(linked) == ["u-b", "x"]
    opened = readable(container, [r for r in rows if r["project"] == PROJECT])
    assert [r["user_name"] for r in opened] == ["John Doe"]  # the held user's key stays
    officer = client.get("/v1/audit", params={"action": "project.data_deleted"}, headers=bearer(keys["officer"]))
    evidence = officer.json()["items"][0]["details"]["evidence"]
    # u-a's grace and content keys (its analytics key went at its request's anonymisation)
    assert evidence["sql.messages"] == 1 and evidence["sql.data_keys"] == 2
    # "all its data goes": the anonymous aggregates kept for the partner too, not another partner's
    assert evidence["clickhouse.daily_metrics"] >= 1
    # u-a's data went with the project's: its request is done (nothing is left to restore);
    # the held user's request is left as it was
    queue = client.get("/v1/officer/deletion-requests", headers=bearer(keys["officer"])).json()["items"]
    assert {r["id"]: r["status"] for r in queue} == {asked["u-a"]: "completed", asked["u-b"]: "on_hold"}
    assert evidence["sql.deletion_requests"] == 1
    trail = client.get("/v1/audit", params={"user_id": "u-a"}, headers=bearer(keys["officer"])).json()["items"]
    assert ("job:offboarding", "deletion_request.completed") in {(e["actor"], e["action"]) for e in trail}
    span = (days[0], days[-1] + timedelta(days=1))
    assert container.event_lifecycle.metrics(PROJECT, *span) == []
    assert [m["dau"] for m in container.event_lifecycle.metrics("other-partner", *span)] == [1]


def test_a_project_hold_freezes_offboarding(client: TestClient[Any], keys: dict[str, str], container: Container,
                                            clock: FakeClock) -> None:
    post(client, keys, frontend("message_sent", "u-a", text="a", message_id="m-a", room="r"))
    client.post("/v1/holds", json={"scope": "project", "target": PROJECT, "reason": "audit"},
                headers=bearer(keys["officer"]))
    container.accounts.offboard_project(PROJECT)
    summary = container.offboarding.run(clock.now)
    assert (summary.processed, summary.held) == (0, 1)
    assert len(ch_rows(container)) == 1


def test_retention_destroys_the_day_keys_of_actorless_events_past_the_cap(
    client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock
) -> None:
    now = clock.now = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    upload = {"event": "file_upload", "value": {"project": PROJECT, "name": "scan-of-passport.png", "size": 1}}
    old, recent = copy.deepcopy(upload), copy.deepcopy(upload)
    old["value"]["created_at"], recent["value"]["created_at"] = iso(add_months(now, -14)), iso(now)
    deliver_as_sent(client, keys, clock, [old, recent])
    assert [r["user_name"] for r in readable(container, ch_rows(container))] == ["scan-of-passport.png"] * 2
    summary = container.retention.run(now)
    assert summary.stores["sql.data_keys"] == 1
    with container.uow() as uow:
        owners = sorted(uow.keys.owners_between("events:", "events:\uffff", "analytics"))
    assert owners == [f"events:{subject_project(container)}:{now.date().isoformat()}"]


def subject_project(container: Container) -> str:
    with container.uow() as uow:
        project = uow.projects.by_name(PROJECT)
        assert project is not None
        return project.id


def test_daily_metrics_are_per_day(container: Container) -> None:
    assert container.event_lifecycle.metrics("nobody", date(2026, 1, 1), date(2026, 2, 1)) == []


def test_offboarding_keeps_a_held_rooms_messages_with_their_authors(client: TestClient[Any], keys: dict[str, str],
                                                                    container: Container, clock: FakeClock) -> None:
    post(client, keys, [frontend("message_sent", "u-a", text="kept", message_id="m-a", room="r-held"),
                        frontend("message_sent", "u-b", text="gone", message_id="m-b", room="r-free")])
    client.post("/v1/holds", json={"scope": "room", "target": "r-held", "reason": "inquiry"},
                headers=bearer(keys["officer"]))
    container.accounts.offboard_project(PROJECT)
    container.offboarding.run(clock.now)
    with container.uow() as uow:
        users = linked_users(container, uow)
        kept = [(m, open_text(container, author, text, uow), users.get(author)) for m, text, author in
                uow.session.execute(select(Message.message_id, Message.text, Message.subject_id))]
        linked = sorted(users.values())
    assert kept == [("m-a", "kept", "u-a")] and linked == ["u-a"]
