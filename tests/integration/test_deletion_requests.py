"""Deletion requests through the service, on SQLite and PostgreSQL."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from app.bootstrap import Container
from app.domain.requests import Mode
from app.services.errors import Conflict, NotFound, Unprocessable
from tests.conftest import FakeClock


def pid(container: Container, name: str = "acme") -> str:
    with container.uow() as uow:
        project = uow.projects.by_name(name)
        assert project is not None
        return project.id


def request(container: Container, user: str = "u-1", mode: Mode = Mode.GRACE, key: str | None = None,
            reason: str | None = None):  # type: ignore[no-untyped-def]
    return container.deletions.request(pid(container), user, mode, reason, actor="partner:acme",
                                       idempotency_key=key)


def test_new_request_is_pending_with_deadlines(container: Container, project: dict[str, str],
                                              clock: FakeClock) -> None:
    outcome = request(container)
    assert outcome.created
    body = outcome.body
    assert body.status == "pending" and body.mode == "grace" and body.source == "partner_api"
    assert body.user_id == "u-1" and body.project == "acme"
    assert body.grace_until == (clock.now + timedelta(days=30)).isoformat()
    assert body.due_by >= body.grace_until


def test_second_request_for_the_same_user_returns_the_open_one(container: Container, project: dict[str, str]) -> None:
    first = request(container)
    second = request(container, mode=Mode.IMMEDIATE)
    assert not second.created
    assert second.body.id == first.body.id
    assert second.body.mode == "grace"


def test_concurrent_requests_for_one_user_open_one_request(container: Container, project: dict[str, str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: request(container, "u-race"), range(8)))
    assert len({o.body.id for o in outcomes}) == 1
    assert [o.created for o in outcomes].count(True) == 1


def test_idempotency_key_same_body_same_response(container: Container, project: dict[str, str]) -> None:
    first = request(container, key="k-1")
    again = request(container, key="k-1")
    assert (again.created, again.body) == (first.created, first.body)


def test_idempotency_key_with_another_body_is_422(container: Container, project: dict[str, str]) -> None:
    request(container, key="k-1")
    with pytest.raises(Unprocessable, match="different body"):
        request(container, "u-2", key="k-1")


def test_idempotency_key_in_flight_is_409_and_abandoned_after_timeout(
    container: Container, project: dict[str, str], clock: FakeClock
) -> None:
    # Another call with this key and body is under way (or crashed) and has not answered yet.
    with container.uow() as uow:
        uow.idempotency.start(pid(container), "k-1", container.deletions._body_hash("u-1", Mode.GRACE, None),
                              clock.now)
        uow.commit()
    with pytest.raises(Conflict, match="in flight") as caught:
        request(container, key="k-1")
    assert getattr(caught.value, "retry_after", None) == 1  # a 409 with Retry-After: 1
    clock.advance(minutes=5)
    assert request(container, key="k-1").created


def test_idempotency_record_does_not_store_the_user_id(container: Container, project: dict[str, str]) -> None:
    request(container, "u-secret-marker", key="k-1")
    with container.uow() as uow:
        record = uow.idempotency.get(pid(container), "k-1")
        assert record is not None
        assert "u-secret-marker" not in repr(record.response) + record.body_hash


def test_restore_in_grace_then_refusals(container: Container, project: dict[str, str], clock: FakeClock) -> None:
    created = request(container).body
    container.erasure.anonymise(clock.now)
    restored = container.deletions.restore(pid(container), created.id, actor="partner:acme")
    assert restored.status == "restored" and restored.restored_at == clock.now.isoformat()
    with pytest.raises(Conflict, match="already restored"):
        container.deletions.restore(pid(container), created.id, actor="partner:acme")
    with container.uow() as uow:
        subject = container.identities.find(uow, pid(container), "u-1")
        assert subject is not None and subject.status == "active"


def test_restore_of_immediate_request_is_refused(container: Container, project: dict[str, str]) -> None:
    created = request(container, mode=Mode.IMMEDIATE).body
    with pytest.raises(Conflict, match="immediate"):
        container.deletions.restore(pid(container), created.id, actor="partner:acme")


def test_restore_after_grace_is_refused(container: Container, project: dict[str, str], clock: FakeClock) -> None:
    created = request(container).body
    container.erasure.anonymise(clock.now)
    clock.advance(days=30)
    with pytest.raises(Conflict, match="grace period has ended"):
        container.deletions.restore(pid(container), created.id, actor="partner:acme")


def test_another_projects_request_is_not_found(container: Container, project: dict[str, str]) -> None:
    container.accounts.create_project("other")
    created = request(container).body
    with pytest.raises(NotFound):
        container.deletions.get(pid(container, "other"), created.id)


def test_list_is_paginated_newest_first_and_filtered(container: Container, project: dict[str, str],
                                                     clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        clock.advance(seconds=1)
        ids.append(request(container, f"u-{i}").body.id)
    seen, cursor = [], None
    while True:
        page = container.deletions.page(pid(container), user_id=None, status=None, limit=3, cursor=cursor)
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    only = container.deletions.page(pid(container), user_id="u-3", status=None, limit=50, cursor=None)
    assert [i.id for i in only.items] == [ids[3]]
    assert container.deletions.page(pid(container), user_id=None, status="completed", limit=50,
                                    cursor=None).items == []
