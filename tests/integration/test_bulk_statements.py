"""The webhook's bulk statements (receipts claimed, activity moved forward) give the same
answers on both dialects: PostgreSQL sends their rows as one JSON document
(stores.sql.queries.json_rows), SQLite as executemany."""

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm.exc import StaleDataError

from app.bootstrap import Container
from app.domain.ids import new_id
from app.models import DeletionRequest, EventReceipt, Subject
from tests.conftest import FakeClock
from tests.integration.test_deletion_requests import pid, request


def test_receipts_are_claimed_once_with_their_time(container: Container, project: dict[str, str],
                                                   clock: FakeClock) -> None:
    project_id = pid(container)
    with container.uow() as uow:
        assert uow.receipts.claim(project_id, ["a", "b", "a"], clock.now) == {"a", "b"}
        assert uow.receipts.claim(project_id, [], clock.now) == set()
        uow.commit()
    later = clock.now + timedelta(hours=1)
    with container.uow() as uow:
        assert uow.receipts.claim(project_id, ["b", "c"], later) == {"c"}
        uow.commit()
    with container.uow() as uow:
        stored = dict(uow.session.execute(select(EventReceipt.dedup_key, EventReceipt.received_at)).all())
    assert stored == {"a": clock.now, "b": clock.now, "c": later}  # UTC in, UTC out, whatever the session's zone


def test_activity_only_moves_forward(container: Container, project: dict[str, str], clock: FakeClock) -> None:
    project_id = pid(container)
    ids = [new_id(), new_id(), new_id()]
    with container.uow() as uow:
        uow.session.execute(insert(Subject), [{"id": i, "project_id": project_id, "status": "active",
                                               "created_at": clock.now, "last_seen_at": clock.now} for i in ids])
        uow.commit()
    earlier, later = clock.now - timedelta(days=1), clock.now + timedelta(days=1)
    with container.uow() as uow:
        uow.subjects.seen({ids[0]: later, ids[1]: earlier})
        uow.subjects.seen({})
        uow.commit()
    with container.uow() as uow:
        seen = dict(uow.session.execute(select(Subject.id, Subject.last_seen_at)).all())
    assert seen == {ids[0]: later, ids[1]: clock.now, ids[2]: clock.now}


def test_locked_requests_are_saved_with_their_changes_and_a_new_version(container: Container,
                                                                        project: dict[str, str],
                                                                        clock: FakeClock) -> None:
    """DeletionRequests.save: one statement per set of changed columns (PostgreSQL: array
    parameters), every type it carries (text, time, none, JSON, integer) as it was set, each
    row guarded by the version it was read at."""
    ids = [request(container, f"u-{n}").body.id for n in range(3)]
    later = clock.now + timedelta(minutes=5)
    with container.uow() as uow:
        rows = uow.requests.lock(ids)
        versions = {row.id: row.version for row in rows}
        rows[0].status, rows[0].anonymised_at, rows[0].evidence = "in_grace", later, {"s": {"anonymised": 2}}
        rows[1].status, rows[1].anonymised_at, rows[1].evidence = "in_grace", later, {"s": {"anonymised": 0}}
        rows[2].attempts, rows[2].detail, rows[2].lease_until = 4, None, None
        uow.requests.save(rows)
        uow.commit()
    with container.uow() as uow:
        saved = {row.id: row for row in uow.requests.lock(ids)}
        first, second, third = (saved[row_id] for row_id in sorted(ids))
    assert (first.status, first.anonymised_at, first.evidence) == ("in_grace", later, {"s": {"anonymised": 2}})
    assert (second.status, second.anonymised_at, second.evidence) == ("in_grace", later, {"s": {"anonymised": 0}})
    assert (third.status, third.attempts, third.anonymised_at) == ("pending", 4, None)
    assert {row_id: row.version for row_id, row in saved.items()} == {i: v + 1 for i, v in versions.items()}


def test_saving_a_request_changed_elsewhere_meanwhile_fails(container: Container, project: dict[str, str]) -> None:
    ids = sorted(request(container, f"u-{n}").body.id for n in range(2))
    with container.uow() as uow:
        rows = uow.requests.lock(ids)
        uow.session.execute(update(DeletionRequest).where(DeletionRequest.id == ids[1])
                            .values(version=DeletionRequest.version + 1)
                            .execution_options(synchronize_session=False))  # another writer, as far as rows know
        for row in rows:
            row.attempts = 7
        with pytest.raises(StaleDataError):
            uow.requests.save(rows)
