"""Restore, anonymise and purge racing for one request, on SQLite and PostgreSQL.

Two kinds of test:
- explicit interleaving points: another actor's move runs between a job's claim and its
  commit (inside the job's ClickHouse step, the moment the issue's races hit), so each
  ordering is reproduced every time;
- real threads (an API and two workers, the purging one with its clock skewed), checked
  against the invariants: request status and stored data always agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text

from app.bootstrap import Container
from app.domain.holds import Scope
from app.domain.requests import Mode
from app.models import AuditEntry, DeletionRequest, Profile, Subject
from app.retry import is_transient, retry_transient
from app.services.errors import Conflict, ServiceError
from tests.conftest import FakeClock
from tests.fixtures.interleave import erasure_with
from tests.integration.test_deletion_requests import pid, request
from tests.integration.test_erasure import add_profile


def state(container: Container, request_id: str) -> tuple[DeletionRequest, Subject, bool]:
    with container.uow() as uow:
        row = uow.session.get(DeletionRequest, request_id)
        assert row is not None
        subject = uow.subjects.get(row.subject_id)
        assert subject is not None
        return row, subject, uow.session.get(Profile, subject.id) is not None


def actions(container: Container, request_id: str) -> list[str]:
    with container.uow() as uow:
        entries = uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
        return [e.action for e in entries if e.details.get("request_id") == request_id]


def assert_consistent(container: Container, request_id: str) -> str:
    """Request status and stored data agree; returns the status."""
    row, subject, has_profile = state(container, request_id)
    done = actions(container, request_id)
    if row.status == "restored":
        assert subject.user_id is not None and subject.status == "active", "restored but unlinked or hidden"
        assert has_profile, "restored but the profile is gone"
        assert row.completed_at is None and "deletion_request.completed" not in done
    elif row.status == "completed":
        assert subject.user_id is None and not has_profile, "completed but data left"
        assert row.restored_at is None and "deletion_request.restored" not in done
        assert done.count("deletion_request.completed") == 1
    elif row.status in ("in_grace", "on_hold"):
        assert subject.user_id is not None and (subject.status == "hidden" or row.status == "on_hold")
        assert has_profile
    elif row.status == "pending":
        assert subject.status == "active" and has_profile
    assert container.audit.verify().ok
    return row.status


def test_restore_between_claim_and_commit_of_anonymise_wins(container: Container, project: dict[str, str],
                                                             clock: FakeClock) -> None:
    add_profile(container, "u-1", clock)
    created = request(container, "u-1").body

    def restore() -> None:
        container.deletions.restore(pid(container), created.id, actor="partner:acme")

    summary = erasure_with(container, restore).anonymise(clock.now)
    assert summary.processed == 0 and summary.failed == 0
    assert assert_consistent(container, created.id) == "restored"
    assert actions(container, created.id) == ["deletion_request.created", "deletion_request.restored"]


def test_restore_between_claim_and_commit_of_purge_wins_over_a_clock_ahead(
    container: Container, project: dict[str, str], clock: FakeClock
) -> None:
    add_profile(container, "u-1", clock)
    created = request(container, "u-1").body
    container.erasure.anonymise(clock.now)
    clock.advance(days=30, seconds=-1)  # the API: one second of grace left

    def restore() -> None:
        container.deletions.restore(pid(container), created.id, actor="partner:acme")

    # the purging worker's clock is 2 s ahead: for it, grace has ended
    summary = erasure_with(container, restore).purge(clock.now + timedelta(seconds=2))
    assert summary.purged == 0 and summary.failed == 0
    assert assert_consistent(container, created.id) == "restored"


def test_restore_after_the_purge_committed_is_refused(container: Container, project: dict[str, str],
                                                      clock: FakeClock) -> None:
    add_profile(container, "u-1", clock)
    created = request(container, "u-1").body
    container.erasure.anonymise(clock.now)
    clock.advance(days=30, seconds=-1)
    assert container.erasure.purge(clock.now + timedelta(seconds=2)).purged == 1
    with pytest.raises(Conflict, match="purged"):
        container.deletions.restore(pid(container), created.id, actor="partner:acme")
    assert assert_consistent(container, created.id) == "completed"


def test_hold_placed_between_claim_and_commit_stops_the_step(container: Container, project: dict[str, str],
                                                             clock: FakeClock) -> None:
    add_profile(container, "u-1", clock)
    created = request(container, "u-1", Mode.IMMEDIATE).body

    def hold() -> None:
        container.holds.place(pid(container), "acme", Scope.USER, "u-1", "inquiry", reference=None,
                              expires_at=None, actor="officer:olga")

    summary = erasure_with(container, hold).anonymise(clock.now)
    assert (summary.processed, summary.held) == (0, 1)
    assert assert_consistent(container, created.id) == "on_hold"


def test_a_hold_placed_after_the_commit_step_read_the_holds_waits_for_that_step(
        container: Container, project: dict[str, str], clock: FakeClock) -> None:
    """The window the interleaving point above does not reach: the committing transaction has
    read the standing holds (none) and is deleting. A hold placed then must not get its answer
    before that transaction commits, or its 201 would come before its data is deleted
    (PostgreSQL, read committed; SQLite's writers are serial anyway)."""
    add_profile(container, "u-1", clock)
    created = request(container, "u-1", Mode.IMMEDIATE).body
    real_standing = container.holds.standing
    armed, outcome = threading.Event(), {}

    def place() -> None:
        try:
            container.holds.place(pid(container), "acme", Scope.USER, "u-1", "inquiry", reference=None,
                                  expires_at=None, actor="officer:olga")
        except Exception as exc:  # said by the assertion below, not lost in the thread
            outcome["error"] = repr(exc)
            return
        outcome["placed_while_step_open"] = not outcome.get("step_done", False)

    def standing_then_a_hold(uow: object, project_ids: object) -> object:
        found = real_standing(uow, project_ids)  # type: ignore[arg-type]
        if armed.is_set() and "thread" not in outcome:  # the commit step's read
            outcome["thread"] = thread = threading.Thread(target=place)
            thread.start()
            thread.join(timeout=1.0)  # time enough to commit, were it not kept waiting
        return found

    container.holds.standing = standing_then_a_hold  # type: ignore[method-assign]
    try:
        summary = erasure_with(container, armed.set).anonymise(clock.now)
        outcome["step_done"] = True
        thread = outcome["thread"]
        assert isinstance(thread, threading.Thread)
        thread.join(timeout=30)
    finally:
        container.holds.standing = real_standing  # type: ignore[method-assign]
    assert "error" not in outcome, outcome["error"]
    assert summary.processed == 1  # the step read no hold, so it went on...
    assert outcome["placed_while_step_open"] is False  # ...and the hold stood only after it committed
    assert assert_consistent(container, created.id) == "completed"
    assert len(container.holds.page({pid(container): "acme"}, active=True, limit=10, cursor=None).items) == 1


def test_confirmation_then_restore_webhooks_racing_anonymise(container: Container, project: dict[str, str],
                                                              clock: FakeClock) -> None:
    """`delete_profile_confirmed`, then `account_restored` arriving while anonymise runs."""
    import json

    from tests.fixtures.platform import frontend

    add_profile(container, "u-1", clock)
    project_id = pid(container)

    def deliver(event: str) -> None:
        envelope = frontend(event, "u-1", created_at=clock.now.isoformat())
        envelope["value"]["project"] = "acme"
        result = container.ingest.ingest(project_id, "acme", json.dumps(envelope).encode())
        assert result.accepted == 1

    deliver("delete_profile_confirmed")
    with container.uow() as uow:
        subject = container.identities.find(uow, project_id, "u-1")
        assert subject is not None
        row = uow.requests.open_for(subject.id)
        assert row is not None
        request_id = row.id
    clock.advance(seconds=1)
    erasure_with(container, lambda: deliver("account_restored")).anonymise(clock.now)
    assert assert_consistent(container, request_id) == "restored"


@pytest.mark.slow
def test_threads_racing_restore_anonymise_and_purge_stay_consistent(container: Container, project: dict[str, str],
                                                                   clock: FakeClock) -> None:
    """An API and two workers on one database, the purging worker's clock 2 s ahead."""
    users = [f"u-{i}" for i in range(12)]
    for user in users:
        add_profile(container, user, clock)
    ids = [request(container, user).body.id for user in users]
    container.erasure.anonymise(clock.now)  # half of them will race the purge, half the anonymise
    later = [request(container, f"v-{i}").body.id for i in range(12)]
    for i in range(12):
        add_profile(container, f"v-{i}", clock)
    clock.advance(days=30, seconds=-1)
    project_id = pid(container)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def api() -> None:
        start.wait()
        for request_id in [*ids, *later]:
            try:
                container.deletions.restore(project_id, request_id, actor="partner:acme")
            except ServiceError:
                pass  # 409: a fine answer
            except BaseException as exc:
                errors.append(exc)

    def worker(step: str, skew: timedelta) -> None:
        start.wait()
        try:
            run = container.erasure.anonymise if step == "anonymise" else container.erasure.purge
            assert run(clock.now + skew).failed == 0
        except BaseException as exc:
            errors.append(exc)

    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(api), pool.submit(worker, "anonymise", timedelta(0)),
                       pool.submit(worker, "purge", timedelta(seconds=2))]:
            future.result()
    assert errors == []
    statuses = {assert_consistent(container, request_id) for request_id in [*ids, *later]}
    assert statuses <= {"restored", "completed", "in_grace", "pending"}


def test_a_real_deadlock_is_transient_and_retried(engine: Engine) -> None:
    """Two transactions locking two rows in opposite orders: PostgreSQL kills one with a
    deadlock error; `retry_transient` runs it again and both end up done."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: it cannot deadlock")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS race_rows"))
        conn.execute(text("CREATE TABLE race_rows (id int primary key, n int)"))
        conn.execute(text("INSERT INTO race_rows VALUES (1, 0), (2, 0)"))
    gate = threading.Barrier(2)
    failures: list[BaseException] = []

    def transaction(first: int, second: int) -> Callable[[], None]:
        tries = [0]

        def run() -> None:
            tries[0] += 1
            try:
                with engine.begin() as conn:
                    conn.execute(text("UPDATE race_rows SET n = n + 1 WHERE id = :i"), {"i": first})
                    if tries[0] == 1:
                        gate.wait(timeout=10)  # both hold their first row: the second locks cross
                    conn.execute(text("UPDATE race_rows SET n = n + 1 WHERE id = :i"), {"i": second})
            except Exception as exc:
                failures.append(exc)
                raise
        return run

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(retry_transient, transaction(1, 2)), pool.submit(retry_transient, transaction(2, 1))]
        for future in futures:
            future.result(timeout=60)
    with engine.begin() as conn:
        counts = sorted(n for (n,) in conn.execute(text("SELECT n FROM race_rows")))
        conn.execute(text("DROP TABLE race_rows"))
    assert counts == [2, 2]  # both transactions committed in the end
    assert failures and all(is_transient(exc) for exc in failures)
    assert any(getattr(getattr(exc, "orig", None), "sqlstate", None) == "40P01" for exc in failures)


def test_a_batch_that_loses_the_race_for_a_users_open_request_reads_again(
        container: Container, project: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer opens a request for a listed user after the batch read the open requests
    and before it inserts its own (on PostgreSQL both run at once): the one-open-request index
    refuses the batch's insert. The batch is read again and reports that user `open`, not a 500.
    The window is made here by the batch's first read missing the rival's request."""
    from app.stores.sql.requests import DeletionRequests

    rival = request(container, "u-raced").body
    real_read = DeletionRequests.open_for_many
    reads: list[int] = []

    def stale_first_read(self: DeletionRequests, subject_ids: list[str]) -> dict[str, DeletionRequest]:
        reads.append(len(subject_ids))
        return {} if len(reads) == 1 else real_read(self, subject_ids)

    monkeypatch.setattr(DeletionRequests, "open_for_many", stale_first_read)
    answer = container.batches.submit(pid(container), ["u-raced", "u-fresh"], Mode.GRACE, None, actor="partner:acme")
    outcomes = {o.user_id: (o.outcome, o.request) for o in answer.outcomes}
    assert len(reads) == 2  # read again after the refused insert
    assert outcomes["u-raced"] == ("open", rival.id) and outcomes["u-fresh"][0] == "created"
    with container.uow() as uow:
        open_ones = uow.session.scalars(select(DeletionRequest.id).where(DeletionRequest.status == "pending"))
        assert sorted(open_ones) == sorted([rival.id, outcomes["u-fresh"][1]])
