"""The anonymise and purge jobs' service, on SQLite and PostgreSQL."""

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Engine, select

from app.bootstrap import Container
from app.domain.requests import Mode
from app.models import AuditEntry, Profile, Subject
from app.ports import ErasureBatch
from app.services.erasure import ErasureService
from tests.conftest import FakeClock
from tests.integration.test_deletion_requests import pid, request


def add_profile(container: Container, user: str, clock: FakeClock) -> str:
    project_id = pid(container)  # before the transaction: SQLite has one writer at a time
    with container.uow() as uow:
        subject = container.identities.ensure(uow, project_id, [user], clock.now)[user]
        uow.profiles.add(Profile(subject_id=subject.id, display_name=f"Name of {user}",
                                    avatar_url="https://cdn.example/a.png", updated_at=clock.now))
        uow.commit()
        return subject.id


def subject(container: Container, subject_id: str) -> Subject:
    with container.uow() as uow:
        found = uow.subjects.get(subject_id)
        assert found is not None
        return found


def test_anonymise_hides_the_subject_and_moves_to_grace(container: Container, project: dict[str, str],
                                                        clock: FakeClock) -> None:
    sid = add_profile(container, "u-1", clock)
    created = request(container, "u-1").body
    summary = container.erasure.anonymise(clock.now)
    assert (summary.processed, summary.failed) == (1, 0)
    body = container.deletions.get(pid(container), created.id)
    assert body.status == "in_grace" and body.anonymised_at == clock.now.isoformat()
    assert subject(container, sid).status == "hidden"
    assert container.erasure.anonymise(clock.now).processed == 0  # idempotent: nothing left to do


def test_purge_waits_for_grace_then_deletes_and_unlinks(container: Container, project: dict[str, str],
                                                        clock: FakeClock) -> None:
    sid = add_profile(container, "u-1", clock)
    keep = add_profile(container, "u-2", clock)
    created = request(container, "u-1", reason="asked by email").body
    container.erasure.anonymise(clock.now)
    assert container.erasure.purge(clock.now + timedelta(days=29)).processed == 0
    summary = container.erasure.purge(clock.now + timedelta(days=30))
    assert summary.processed == 1 and summary.stores["sql.profiles"] == 1
    body = container.deletions.get(pid(container), created.id)
    assert body.status == "completed" and body.user_id is None
    assert body.evidence["sql.profiles"] == {"anonymised": 0, "deleted": 1, "residual": 0}
    erased = subject(container, sid)
    assert erased.user_id is None and erased.status == "erased"
    project_id = pid(container)
    with container.uow() as uow:
        assert uow.profiles.get(sid) is None and uow.profiles.get(keep) is not None
        assert uow.requests.get(project_id, created.id).reason is None  # type: ignore[union-attr]
        assert container.identities.find(uow, project_id, "u-2") is not None


def test_a_run_as_of_another_instant_stamps_what_it_did_with_the_real_time(
        container: Container, project: dict[str, str], clock: FakeClock) -> None:
    """`--now` decides what is due; it never changes stored timestamps (CONTRACT §2): a run
    ahead of the clock does not date an anonymisation in the future, nor one behind it before
    the request existed."""
    add_profile(container, "u-1", clock)
    created = request(container, "u-1").body
    assert container.erasure.anonymise(clock.now - timedelta(days=400)).processed == 1  # as of a year ago
    body = container.deletions.get(pid(container), created.id)
    assert body.anonymised_at == clock.now.isoformat() >= body.requested_at
    assert container.erasure.purge(clock.now + timedelta(days=31)).processed == 1  # as of next month
    assert container.deletions.get(pid(container), created.id).completed_at == clock.now.isoformat()


def test_immediate_request_completes_in_one_anonymise_run(container: Container, project: dict[str, str],
                                                          clock: FakeClock) -> None:
    sid = add_profile(container, "u-1", clock)
    created = request(container, "u-1", Mode.IMMEDIATE).body
    summary = container.erasure.anonymise(clock.now)
    assert summary.processed == 1
    body = container.deletions.get(pid(container), created.id)
    assert body.status == "completed" and body.completed_at == clock.now.isoformat()
    assert subject(container, sid).user_id is None


def test_purge_is_audited_without_the_user_id(container: Container, project: dict[str, str],
                                              clock: FakeClock) -> None:
    request(container, "u-MARKER-77", Mode.IMMEDIATE)
    container.erasure.anonymise(clock.now)
    with container.uow() as uow:
        entries = list(uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    actions = [e.action for e in entries if e.action.startswith("deletion_request.")]
    # immediate mode: both destructive steps in one run, each with its own entry
    assert actions[-3:] == ["deletion_request.created", "deletion_request.anonymised", "deletion_request.completed"]
    assert "suppressions.added" in [e.action for e in entries]  # the purged user's suppression, as a count
    assert all("MARKER" not in repr((e.actor, e.subject, e.details)) for e in entries)
    subjects = {e.subject for e in entries if e.action.startswith("deletion_request.")}
    assert len(subjects) == 1 and None not in subjects  # every step of one user carries the same keyed hash


class BrokenStore:
    name = "clickhouse.events"

    def __init__(self) -> None:
        self.broken = True

    def _go(self, batch: ErasureBatch) -> Mapping[str, int]:
        if self.broken:
            raise ConnectionError("store unavailable")
        return {s: 1 for s in batch.subject_ids}

    anonymise = purge = _go

    def residual(self, batch: ErasureBatch) -> Mapping[str, int]:
        return {s: 0 for s in batch.subject_ids}


def test_failed_store_marks_requests_failed_and_next_run_retries(container: Container, project: dict[str, str],
                                                                  clock: FakeClock) -> None:
    store = BrokenStore()
    erasure = ErasureService(container.uow, clock, b"k", container.identities, container.sql_steps, [store])
    created = request(container, "u-1").body
    summary = erasure.anonymise(clock.now)
    assert (summary.processed, summary.failed) == (0, 1)
    body = container.deletions.get(pid(container), created.id)
    assert body.status == "failed" and "clickhouse.events" in body.detail
    assert "u-1" not in body.detail
    with container.uow() as uow:  # the failure is in the user's audit trail, under the request's keyed hash
        trail = {e.action: e.subject for e in uow.session.scalars(select(AuditEntry))}
    assert trail["deletion_request.failed"] == trail["deletion_request.created"] is not None
    store.broken = False
    assert erasure.anonymise(clock.now).processed == 1
    body = container.deletions.get(pid(container), created.id)
    assert body.status == "in_grace" and body.detail is None
    assert body.evidence["clickhouse.events"] == {"anonymised": 1}


def test_restore_during_a_run_is_not_overwritten(container: Container, project: dict[str, str],
                                                 clock: FakeClock) -> None:
    created = request(container, "u-1").body
    restore = container.deletions.restore

    class RestoreMidway:
        name = "clickhouse.events"

        def anonymise(self, batch: ErasureBatch) -> Mapping[str, int]:
            restore(pid(container), created.id, actor="partner:acme")  # the user came back meanwhile
            return {}

        purge = residual = anonymise

    ErasureService(container.uow, clock, b"k", container.identities, container.sql_steps,
                   [RestoreMidway()]).anonymise(clock.now)
    assert container.deletions.get(pid(container), created.id).status == "restored"


def test_two_workers_never_claim_the_same_request(container: Container, project: dict[str, str],
                                                  clock: FakeClock) -> None:
    for i in range(40):
        request(container, f"u-{i}")
    steps = container.sql_steps
    services = [ErasureService(container.uow, clock, b"k", container.identities, steps, [], batch_size=5)
                for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        summaries = list(pool.map(lambda s: s.anonymise(clock.now), services))
    assert sum(s.processed for s in summaries) == 40
    assert sum(s.failed for s in summaries) == 0
    with container.uow() as uow:
        created = [e for e in uow.session.scalars(select(AuditEntry)) if e.action == "deletion_request.anonymised"]
    assert len(created) == 40
    assert container.audit.verify().ok


def test_a_destroyed_key_leaves_the_key_tables_file(
    container: Container, project: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    """SQLite: no byte of the wrapped key in the file or its WAL after the erasure run (it
    checkpoints); PostgreSQL: none in the key table's file (read with pg_read_binary_file after
    CHECKPOINT) after the key_compaction job, which the erasure run leaves VACUUM FULL to."""
    import json

    from sqlalchemy import text

    from jobs.registry import run_job
    from tests.fixtures.platform import frontend
    from tests.integration.test_keys import _pg_bytes, _pg_path, _sqlite_bytes

    envelope = frontend("session_started", "u-1")
    envelope["value"]["project"] = "acme"
    assert container.ingest.ingest(pid(container), "acme", json.dumps(envelope).encode()).accepted == 1
    with container.uow() as uow:
        wrapped = bytes(uow.session.execute(text("SELECT wrapped FROM data_keys WHERE purpose = 'analytics'"))
                        .scalar_one())

    def on_disk() -> bytes:
        return _sqlite_bytes(engine) if engine.dialect.name == "sqlite" else _pg_bytes(engine, _pg_path(engine))

    assert wrapped in on_disk()  # the check can see the key while it exists
    request(container, "u-1")
    assert container.erasure.anonymise(clock.now).processed == 1
    if engine.dialect.name == "sqlite":
        assert wrapped not in on_disk()
    else:
        assert wrapped in on_disk()  # no VACUUM FULL on the run's path
    assert run_job(container, "key_compaction", clock.now)["processed"] == 1
    assert wrapped not in on_disk()
