"""Platform user ids are never stored in plaintext: found by a keyed hash, kept sealed under the
subject's grace key, gone for good with the purge (issue 7), on SQLite and PostgreSQL."""

from datetime import timedelta

from sqlalchemy import delete, func, insert, select

from app.bootstrap import Container
from app.domain.events import Actor
from app.domain.ids import new_id
from app.models import AuditEntry, JobRun, Subject
from tests.conftest import FakeClock
from tests.integration.test_deletion_requests import pid, request

USER = "canary-user-7Hq/+=="  # base64-like, with the characters routes must survive


def stored(container: Container) -> list[Subject]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(Subject)))


def test_a_user_id_is_stored_sealed_and_found_by_its_keyed_hash(container: Container, project: dict[str, str],
                                                               clock: FakeClock) -> None:
    body = request(container, USER, reason="asked").body
    assert body.user_id == USER  # what the partner sees is the id, opened
    (subject,) = stored(container)
    assert subject.user_id is not None and subject.user_id.startswith("v1.") and USER not in subject.user_id
    assert subject.user_key == container.identities.lookup(pid(container), USER) and len(subject.user_key) == 64
    assert container.deletions.page(pid(container), user_id=USER, status=None, limit=10, cursor=None).items
    # another project's same user is another subject with an unrelated key
    assert container.identities.lookup("other-project", USER) != subject.user_key


def test_the_purge_leaves_neither_hash_nor_sealed_id_nor_key(container: Container, project: dict[str, str],
                                                             clock: FakeClock) -> None:
    created = request(container, USER).body
    container.erasure.anonymise(clock.now)
    (hidden,) = stored(container)
    assert hidden.user_key is not None  # restorable during grace: still found
    container.erasure.purge(clock.now + timedelta(days=31))
    assert container.deletions.get(pid(container), created.id).status == "completed"
    (erased,) = stored(container)
    assert (erased.user_key, erased.user_id, erased.status) == (None, None, "erased")
    project_id = pid(container)
    with container.uow() as uow:
        assert uow.keys.having([erased.id], "grace") == set()
        assert container.identities.find(uow, project_id, USER) is None


def test_migrate_seals_the_ids_older_versions_stored_in_plaintext(container: Container, project: dict[str, str],
                                                                  clock: FakeClock) -> None:
    project_id = pid(container)
    with container.uow() as uow:  # a row as written before ids were sealed
        uow.session.execute(insert(Subject).values(id=new_id(), project_id=project_id, user_id="legacy-user",
                                                   status="active", created_at=clock.now, last_seen_at=clock.now))
        uow.commit()
    forget_upgrades(container)  # a database from before: its upgrades have not run yet
    container.migrate(clickhouse=False)
    (subject,) = stored(container)
    assert subject.user_id is not None and subject.user_id.startswith("v1.")
    with container.uow() as uow:
        assert container.identities.user_ids(uow, [subject]) == {subject.id: "legacy-user"}
        assert uow.session.scalar(select(AuditEntry.details).where(AuditEntry.action == "subjects.sealed")) == {
            "subjects": 1}
    # the legacy user's events land on the same subject, not a new one
    assert request(container, "legacy-user").created
    assert len(stored(container)) == 1
    container.migrate(clickhouse=False)  # nothing left to seal: a second run changes nothing
    assert [s.user_id for s in stored(container)] == [subject.user_id]


def forget_upgrades(container: Container) -> None:
    with container.uow() as uow:
        uow.session.execute(delete(JobRun).where(JobRun.job.startswith("upgrade:")))
        uow.commit()


def test_migrate_moves_admins_out_of_the_namespace_chat_users_can_reach(container: Container,
                                                                         project: dict[str, str],
                                                                         clock: FakeClock) -> None:
    """Older versions keyed admin 7 as "admin:7", the id a chat user could choose: migrate keys
    the admin's subject anew, so "admin:7" is a chat user's id again and the admin keeps its
    subject (and with it its events and messages)."""
    project_id = pid(container)
    with container.uow() as uow:
        (legacy,) = container.identities.ensure(uow, project_id, ["admin:7"], clock.now).values()
        legacy.admin = True
        uow.commit()
    forget_upgrades(container)
    container.migrate(clickhouse=False)
    admin_key = Actor("admin", "7").key
    with container.uow() as uow:
        moved = container.identities.find(uow, project_id, admin_key)
        assert moved is not None and moved.id == legacy.id
        assert container.identities.user_ids(uow, [moved]) == {legacy.id: admin_key}
        assert container.identities.find(uow, project_id, "admin:7") is None
        assert uow.session.scalar(select(AuditEntry.details).where(
            AuditEntry.action == "subjects.admins_rekeyed")) == {"subjects": 1}
        assert uow.job_runs.last("upgrade:admin_namespace") is not None
    container.migrate(clickhouse=False)  # recorded: not run again
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(JobRun).where(
            JobRun.job == "upgrade:admin_namespace")) == 1
