"""The webhook's bulk statements (receipts claimed, activity moved forward) give the same
answers on both dialects: PostgreSQL sends them as array parameters (stores.sql.queries.unnested),
SQLite as executemany."""

from datetime import timedelta

from sqlalchemy import insert, select

from app.bootstrap import Container
from app.domain.ids import new_id
from app.models import EventReceipt, Subject
from tests.conftest import FakeClock
from tests.integration.test_deletion_requests import pid


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
