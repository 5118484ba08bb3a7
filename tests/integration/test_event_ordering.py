"""Webhooks arrive in any order: effects resolve by each event's own time (`created_at`),
on SQLite and PostgreSQL. The last test delivers random event histories in every order and
checks that only event time, never delivery order, decides the end state."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.bootstrap import Container
from app.domain.requests import Mode
from app.models import DeletionRequest, Message, Profile, Subject
from tests.conftest import FakeClock
from tests.fixtures.platform import frontend
from tests.http.test_events_api import open_text, opened_profile

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
_projects = itertools.count()


def new_project(container: Container) -> tuple[str, str]:
    name = f"order-{next(_projects)}"
    keys = container.accounts.create_project(name)
    principal = container.accounts.authenticate(keys.api_key)
    assert principal is not None
    return principal.project_id, name


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(project: str, name: str, user: str, minute: int, **extra: Any) -> dict[str, Any]:
    envelope = frontend(name, user, created_at=at(minute), **extra)
    envelope["value"]["project"] = project
    return envelope


def deliver(container: Container, project: tuple[str, str], *envelopes: dict[str, Any]) -> None:
    for envelope in envelopes:  # one webhook call each: this is the arrival order
        result = container.ingest.ingest(project[0], project[1], json.dumps(envelope).encode())
        assert result.accepted == 1, result.rejected


def end_state(container: Container, project_id: str) -> dict[str, Any]:
    """What the user and the partner see: messages, profiles, the open request per user."""
    with container.uow() as uow:
        users = container.identities.user_ids(uow, uow.session.scalars(
            select(Subject).where(Subject.project_id == project_id)))
        rows = uow.session.scalars(select(Message).where(Message.project_id == project_id))
        messages = {m.message_id: (users.get(m.subject_id or ""), open_text(container, m.subject_id, m.text, uow),
                                   m.sent_at, m.deleted_at, m.placeholder) for m in rows}
        with_profile = {users.get(sid): sid for sid in uow.session.scalars(
            select(Profile.subject_id).join(Subject, Subject.id == Profile.subject_id)
            .where(Subject.project_id == project_id))}
        open_rows = uow.session.scalars(select(DeletionRequest).where(
            DeletionRequest.project_id == project_id,
            DeletionRequest.status.in_(["pending", "in_grace", "on_hold", "failed"])))
        open_requests = {users.get(r.subject_id): (r.status, r.requested_at, r.grace_until) for r in open_rows}
        statuses = {users.get(sid): status for sid, status in uow.session.execute(
            select(Subject.id, Subject.status).where(Subject.project_id == project_id))}
    profiles = {user: opened_profile(container, subject) for user, subject in with_profile.items()}
    return {"messages": messages, "profiles": profiles, "open": open_requests, "subjects": statuses}


def test_message_deleted_before_it_was_sent_stays_deleted(container: Container) -> None:
    project = new_project(container)
    deliver(container, project, event(project[1], "message_deleted", "u-1", 2, message_id="m-1"),
            event(project[1], "message_sent", "u-1", 1, message_id="m-1", room="r-1", text="oops"))
    (message,) = end_state(container, project[0])["messages"].values()
    assert message == ("u-1", "oops", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), False)
    assert container.messages.get(project[0], "m-1").state == "deleted"


def test_a_user_deletes_only_their_own_messages(container: Container) -> None:
    """Another user's `message_deleted` changes nothing, sent before or after the message
    (an admin deletes with `admin_message_deleted`); the author's own deletion stands."""
    project = new_project(container)
    deliver(container, project, event(project[1], "message_deleted", "u-2", 2, message_id="m-1"),
            event(project[1], "message_sent", "u-1", 1, message_id="m-1", room="r-1", text="mine"),
            event(project[1], "message_deleted", "u-2", 3, message_id="m-1"))
    assert end_state(container, project[0])["messages"]["m-1"] == ("u-1", "mine", T0 + timedelta(minutes=1),
                                                                  None, False)
    assert container.messages.get(project[0], "m-1").state == "visible"
    deliver(container, project, event(project[1], "message_deleted", "u-1", 4, message_id="m-1"))
    assert end_state(container, project[0])["messages"]["m-1"][3] == T0 + timedelta(minutes=4)


def test_another_users_edit_that_arrives_first_does_not_become_the_text(container: Container) -> None:
    project = new_project(container)
    deliver(container, project,
            event(project[1], "message_changed", "u-2", 2, message_id="m-1", text="not yours"),
            event(project[1], "message_sent", "u-1", 1, message_id="m-1", room="r-1", text="mine"))
    assert end_state(container, project[0])["messages"]["m-1"] == ("u-1", "mine", T0 + timedelta(minutes=1),
                                                                  None, False)


def test_an_older_avatar_is_kept_beside_a_newer_name(container: Container) -> None:
    project = new_project(container)
    deliver(container, project, event(project[1], "name_changed", "u-1", 5, user_name="New"),
            event(project[1], "avatar_set", "u-1", 1, type="custom", url="https://cdn/a.png"),
            event(project[1], "name_set", "u-1", 0, user_name="Old"))
    assert end_state(container, project[0])["profiles"] == {"u-1": ("New", "https://cdn/a.png")}


def test_a_restore_delivered_before_an_older_confirmation_wins(container: Container) -> None:
    project = new_project(container)
    deliver(container, project, event(project[1], "account_restored", "u-1", 2),
            event(project[1], "delete_profile_confirmed", "u-1", 1))
    assert end_state(container, project[0])["open"] == {}


def test_a_partners_restore_wins_over_an_older_confirmation_that_arrives_after_it(
    container: Container, clock: FakeClock
) -> None:
    """The partner restores at 09:10; the user's confirmation of 09:01 is delivered at 09:20. The
    restore is the later word: no request opens, and the restored user stays whole."""
    project = new_project(container)
    clock.now = T0 + timedelta(minutes=10)
    created = container.deletions.request(project[0], "u-1", Mode.GRACE, None, actor="partner:acme")
    container.deletions.restore(project[0], created.body.id, actor="partner:acme")
    clock.now = T0 + timedelta(minutes=20)
    deliver(container, project, event(project[1], "delete_profile_confirmed", "u-1", 1))
    state = end_state(container, project[0])
    assert state["open"] == {} and state["subjects"] == {"u-1": "active"}
    # a confirmation made after the partner's restore still stands
    deliver(container, project, event(project[1], "delete_profile_confirmed", "u-1", 15))
    ((status, requested_at, _),) = end_state(container, project[0])["open"].values()
    assert (status, requested_at) == ("pending", T0 + timedelta(minutes=15))


def test_a_confirmation_after_a_restore_stands_whichever_arrives_first(container: Container) -> None:
    project = new_project(container)
    deliver(container, project, event(project[1], "delete_profile_confirmed", "u-1", 3),
            event(project[1], "account_restored", "u-1", 2),
            event(project[1], "delete_profile_confirmed", "u-1", 1))
    ((status, requested_at, _),) = end_state(container, project[0])["open"].values()
    assert (status, requested_at) == ("pending", T0 + timedelta(minutes=3))


def test_grace_runs_from_the_confirmation_and_never_ends_sooner_than_policy_after_receipt(
    container: Container, clock: FakeClock
) -> None:
    project = new_project(container)
    clock.now = T0 + timedelta(days=2)  # delivered two days after the user confirmed
    deliver(container, project, event(project[1], "delete_profile_confirmed", "u-1", 0))
    ((status, requested_at, grace_until),) = end_state(container, project[0])["open"].values()
    assert status == "pending" and requested_at == T0
    assert grace_until == clock.now + timedelta(days=30)
    clock.now = T0 - timedelta(days=1)  # the platform's clock is ahead of ours
    deliver(container, project, event(project[1], "delete_profile_confirmed", "u-2", 0))
    assert end_state(container, project[0])["open"]["u-2"][1] == clock.now  # not dated in the future


KINDS = ["message_sent", "message_deleted", "name_changed", "avatar_set", "delete_profile_confirmed",
         "account_restored"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, str, int, str]], list[int]]:
    """Up to 8 events of two users at distinct minutes, and an arrival order. Each user sends
    and deletes their own message (`m-<user>`), sent at most once, as on the platform."""
    size = draw(st.integers(1, 8))
    minutes = draw(st.lists(st.integers(0, 50), min_size=size, max_size=size, unique=True))
    items, sent = [], set()
    for minute in minutes:
        kind, user = draw(st.sampled_from(KINDS)), draw(st.sampled_from(["u-1", "u-2"]))
        if kind == "message_sent" and user in sent:
            kind = "message_deleted"
        sent |= {user} if kind == "message_sent" else set()
        items.append((kind, user, minute, draw(st.sampled_from(["a", "b"]))))
    return items, draw(st.permutations(range(len(items))))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=histories())
def test_delivery_order_never_changes_the_end_state(container: Container, history: Any) -> None:
    items, arrival = history

    def envelope(project: str, item: tuple[str, str, int, str]) -> dict[str, Any]:
        kind, user, minute, pick = item
        extra: dict[str, Any] = {
            "message_sent": {"message_id": f"m-{user}", "room": "r-1", "text": f"text {minute}"},
            "message_deleted": {"message_id": f"m-{user}"},
            "name_changed": {"user_name": f"{pick}-{minute}"},
            "avatar_set": {"type": "custom", "url": f"https://cdn/{pick}-{minute}.png"},
        }.get(kind, {})
        return event(project, kind, user, minute, **extra)

    in_order, shuffled = new_project(container), new_project(container)
    deliver(container, in_order, *[envelope(in_order[1], item) for item in sorted(items, key=lambda i: i[2])])
    deliver(container, shuffled, *[envelope(shuffled[1], items[i]) for i in arrival])
    assert end_state(container, in_order[0]) == end_state(container, shuffled[0])
