"""A Hypothesis state machine over the whole lifecycle: events, deletion requests, restores,
holds and releases, clock advances and job runs, in any order, and interleaved: a restore,
a user's restore webhook or a hold lands between a job's claim and its commit (explicit
interleaving points), and purges run on a worker clock skewed by up to ±2 s. Invariants after
every step: held data is never altered; a completed request leaves no residue; a restored user
is whole; request status and stored data agree; one audit entry per destructive step; the
audit chain verifies."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from app.bootstrap import Container
from app.config import Settings
from app.domain.crypto import Cipher
from app.domain.holds import Scope
from app.domain.requests import Mode
from app.models import AuditEntry, DeletionRequest, HoldRecord, Message, Subject
from app.services.errors import ServiceError
from app.services.keys import CONTENT, HOLD, MESSAGE_TEXT_AAD, unsealed
from app.services.policies import PolicyBook
from app.stores.clickhouse.client import ClickHouse
from app.stores.sql import migrations
from app.stores.sql.engine import make_engine
from tests.conftest import ROOT, SECRET, FakeClock
from tests.fixtures.interleave import erasure_with
from tests.fixtures.platform import PROJECT, frontend
from tests.http.test_events_api import opened_profile

USERS = ["u0", "u1", "u2"]
ROOMS = ["r0", "r1"]


def build(tmp: Path, clickhouse: ClickHouse) -> Container:
    url = f"sqlite:///{tmp / 'lethe.db'}"
    engine = make_engine(url)
    migrations.upgrade(engine)
    clickhouse.command("TRUNCATE TABLE events")
    return Container(Settings(url, clickhouse.url, ROOT / "policies", SECRET, False), engine,
                     PolicyBook.load(ROOT / "policies"), clock=FakeClock(), clickhouse=clickhouse)


@pytest.mark.slow
def test_lifecycle_state_machine(tmp_path_factory: pytest.TempPathFactory, clickhouse: ClickHouse) -> None:
    class Lifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.c = build(tmp_path_factory.mktemp("sm"), clickhouse)
            self.clock: FakeClock = self.c.clock  # type: ignore[assignment]
            keys = self.c.accounts.create_project(PROJECT)
            self.project_id = self.c.accounts.authenticate(keys.api_key).project_id  # type: ignore[union-attr]
            self.holds: dict[str, tuple[Scope, str, dict[str, Any]]] = {}  # id -> scope, target, snapshot
            self.messages = 0

        def teardown(self) -> None:
            self.c.engine.dispose()

        # --- rules -------------------------------------------------------------------------
        @rule(user=st.sampled_from(USERS), room=st.sampled_from(ROOMS))
        def user_writes(self, user: str, room: str) -> None:
            self.messages += 1
            at = self.clock.now.isoformat()
            body = [frontend("message_sent", user, text=f"text-{user}-{self.messages}", created_at=at,
                             message_id=f"m{self.messages}", room=room, user_name=f"Name {user}"),
                    frontend("name_set", user, user_name=f"Name {user}", created_at=at)]
            self.c.ingest.ingest(self.project_id, PROJECT, json.dumps(body).encode())

        @rule(user=st.sampled_from(USERS), mode=st.sampled_from(list(Mode)))
        def partner_requests_deletion(self, user: str, mode: Mode) -> None:
            self.c.deletions.request(self.project_id, user, mode, None, actor="partner:acme")

        @rule(user=st.sampled_from(USERS))
        def user_comes_back(self, user: str) -> None:
            with contextlib.suppress(ServiceError):  # nothing open, or too late: both are fine answers
                self.c.deletions.restore(self.project_id, None, actor="user:webhook", user_id=user)

        @rule(scope=st.sampled_from([Scope.USER, Scope.ROOM, Scope.MESSAGE]), pick=st.integers(0, 5))
        def officer_places_hold(self, scope: Scope, pick: int) -> None:
            target = {Scope.USER: USERS[pick % 3], Scope.ROOM: ROOMS[pick % 2],
                      Scope.MESSAGE: f"m{pick % max(self.messages, 1) + 1}"}[scope]
            hold = self.c.holds.place(self.project_id, PROJECT, scope, target, "inquiry", reference=None,
                                      expires_at=None, actor="officer:olga")
            self.holds[hold.id] = (scope, target, self.snapshot(scope, target))

        @rule(data=st.data())
        def officer_releases_hold(self, data: st.DataObject) -> None:
            if self.holds:
                hold_id = data.draw(st.sampled_from(sorted(self.holds)))
                self.c.holds.release({self.project_id: PROJECT}, hold_id, actor="officer:olga")
                del self.holds[hold_id]

        @rule(user=st.sampled_from(USERS), event=st.sampled_from(["delete_profile_confirmed", "account_restored"]),
              minutes_ago=st.integers(0, 90))
        def user_lifecycle_webhook(self, user: str, event: str, minutes_ago: int) -> None:
            """The user's own confirmation or restore, dated up to 90 minutes back: webhooks
            come late and out of order."""
            at = (self.clock.now - timedelta(minutes=minutes_ago)).isoformat()
            self.c.ingest.ingest(self.project_id, PROJECT, json.dumps(frontend(event, user, created_at=at)).encode())

        @rule(user=st.sampled_from(USERS), job=st.sampled_from(["anonymise", "purge"]),
              move=st.sampled_from(["partner_restore", "webhook_restore", "hold"]),
              skew=st.integers(-2000, 2000))
        def someone_moves_while_a_job_runs(self, user: str, job: str, move: str, skew: int) -> None:
            """Between the job's claim and its commit, the partner restores, the user's restore
            webhook arrives, or an officer places a hold; the job's clock is skewed (ms)."""
            def partner_restore() -> None:
                with contextlib.suppress(ServiceError):
                    self.c.deletions.restore(self.project_id, None, actor="partner:acme", user_id=user)

            def webhook_restore() -> None:
                body = frontend("account_restored", user, created_at=self.clock.now.isoformat())
                self.c.ingest.ingest(self.project_id, PROJECT, json.dumps(body).encode())

            def hold() -> None:
                self.officer_places_hold(Scope.USER, USERS.index(user))

            moves = {"partner_restore": partner_restore, "webhook_restore": webhook_restore, "hold": hold}
            erasure = erasure_with(self.c, moves[move])
            run = erasure.anonymise if job == "anonymise" else erasure.purge
            assert run(self.clock.now + timedelta(milliseconds=skew)).failed == 0

        @rule(hours=st.integers(1, 24 * 40))
        def time_passes(self, hours: int) -> None:
            self.clock.advance(hours=hours)

        @rule(job=st.sampled_from(["anonymise", "purge", "message_feed"]))
        def job_runs(self, job: str) -> None:
            service = {"anonymise": self.c.erasure.anonymise, "purge": self.c.erasure.purge,
                       "message_feed": self.c.message_feed.run}[job]
            assert service(self.clock.now).failed == 0

        # --- what the invariants look at ---------------------------------------------------
        def snapshot(self, scope: Scope, target: str) -> dict[str, Any]:
            """The held data as it is now: the covered message rows, and for a user the link,
            the profile and the personal values of their events."""
            with self.c.uow() as uow:
                q = select(Message.message_id, Message.subject_id, Message.text, Message.deleted_at,
                           Message.removed_at)
                if scope is Scope.MESSAGE:
                    q = q.where(Message.message_id == target)
                elif scope is Scope.ROOM:
                    q = q.where(Message.room_id == target)
                else:
                    key = self.c.identities.lookup(self.project_id, target)
                    q = q.join(Subject, Subject.id == Message.subject_id).where(Subject.user_key == key)
                # A message's text as it reads, not its bytes: a hold takes what it covers under
                # its own key (services.held), which re-encrypts the same text.
                hold_keys = self.hold_keys(uow)
                snap: dict[str, Any] = {"messages": {
                    message_id: (self.text(uow, author, text, hold_keys), deleted_at, removed_at)
                    for message_id, author, text, deleted_at, removed_at in uow.session.execute(q)}}
                if scope is Scope.USER:
                    subject = self.c.identities.find(uow, self.project_id, target)
                    snap["subject"] = subject.id if subject else None
                    snap["key"] = bool(subject and uow.keys.get([subject.id], "analytics"))
            if scope is Scope.USER:
                opened = opened_profile(self.c, snap["subject"]) if snap["subject"] else None
                snap["profile"] = opened[0] if opened else None  # the name, as its grace key opens it
            if scope is Scope.USER and snap["subject"]:
                snap["events"] = sorted(self.c.clickhouse.rows(
                    "SELECT user_name, text FROM events WHERE subject_id = toUUID({s:String})",
                    parameters={"s": snap["subject"]}, settings={"apply_patch_parts": 0}))
            return snap

        def hold_keys(self, uow: Any) -> list[Cipher]:
            """The keys of every hold that still has one (standing, or ended but not given back)."""
            ids = list(uow.session.scalars(select(HoldRecord.id)))
            return list(self.c.keys.ciphers(uow, ids, HOLD, create=False).values())

        def kept(self, room_id: str | None, message_id: str) -> bool:
            """A standing room or message hold covers this message."""
            return any((scope is Scope.ROOM and target == room_id) or (scope is Scope.MESSAGE and target == message_id)
                       for scope, target, _ in self.holds.values())

        def text(self, uow: Any, author: str | None, stored: str | None, hold_keys: list[Cipher]) -> str | None:
            """A stored text opened by its author's content key or a hold's key (None: unreadable)."""
            content = self.c.keys.ciphers(uow, [author or ""], CONTENT, create=False).get(author or "")
            return unsealed([*([content] if content else []), *hold_keys], stored, MESSAGE_TEXT_AAD.decode())

        @invariant()
        def held_data_is_never_altered(self) -> None:
            for scope, target, before in self.holds.values():
                now = self.snapshot(scope, target)
                for message_id, row in before["messages"].items():
                    assert now["messages"].get(message_id) == row, f"held message {message_id} changed"
                if scope is Scope.USER and before.get("subject"):
                    assert now["subject"] == before["subject"], "a held user's link was destroyed"
                    if before["profile"] is not None:  # a profile set after the hold is new, not altered
                        assert now["profile"] == before["profile"]
                    assert set(before["events"]) <= set(now["events"]), "a held user's events were altered"
                    assert now["key"] or not before["key"], "a held user's events were made unreadable"

        @invariant()
        def completed_requests_leave_no_residue(self) -> None:
            with self.c.uow() as uow:
                done = list(uow.session.scalars(select(DeletionRequest).where(DeletionRequest.status == "completed")))
                for request in done:
                    subject = uow.subjects.get(request.subject_id)
                    assert subject is not None and subject.user_id is None
                    assert uow.profiles.get(subject.id) is None
                    if request.mode == "immediate":  # its messages are deleted, except what a standing
                        # hold keeps; a message kept by a hold since ended is unreadable (its key is gone)
                        hold_keys = self.hold_keys(uow)
                        for message_id, room_id, text in uow.session.execute(
                                select(Message.message_id, Message.room_id, Message.text)
                                .where(Message.subject_id == subject.id)):
                            assert self.kept(room_id, message_id) or self.text(
                                uow, subject.id, text, hold_keys) is None, message_id
                # its events' personal values are unreadable: the key is gone, no plaintext left
                assert not uow.keys.get([r.subject_id for r in done], "analytics")
            for request in done:
                residue = self.c.clickhouse.rows(
                    "SELECT count() FROM events WHERE subject_id = toUUID({s:String}) AND ((user_name != '' "
                    "AND NOT startsWith(user_name, 'v1.')) OR (text != '' AND NOT startsWith(text, 'v1.')))",
                    parameters={"s": request.subject_id}, settings={"apply_patch_parts": 0})
                assert residue[0][0] == 0

        @invariant()
        def restored_users_are_whole(self) -> None:
            with self.c.uow() as uow:
                rows = uow.session.execute(select(DeletionRequest, Subject).join(
                    Subject, Subject.id == DeletionRequest.subject_id).where(DeletionRequest.status == "restored"))
                for request, subject in rows:
                    later = uow.session.scalar(select(DeletionRequest.id).where(
                        DeletionRequest.subject_id == subject.id, DeletionRequest.requested_at >= request.requested_at,
                        DeletionRequest.id != request.id))
                    if later is None:  # the restore is the user's last word
                        assert subject.user_id is not None and subject.status == "active", request.id

        @invariant()
        def request_status_and_stored_data_agree(self) -> None:
            with self.c.uow() as uow:
                rows = uow.session.execute(select(DeletionRequest, Subject).join(
                    Subject, Subject.id == DeletionRequest.subject_id))
                for request, subject in rows:
                    assert not (request.restored_at and request.completed_at), request.id
                    if request.status == "in_grace":
                        assert subject.status == "hidden" and subject.user_id is not None, request.id
                    elif request.status == "completed":
                        assert subject.user_id is None and subject.status == "erased", request.id
                    elif request.status == "pending":
                        assert subject.status == "active", request.id

        @invariant()
        def one_audit_entry_per_destructive_step(self) -> None:
            with self.c.uow() as uow:
                done: dict[str, list[str]] = {}
                for entry in uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
                    if "request_id" in entry.details:
                        done.setdefault(entry.details["request_id"], []).append(entry.action)
                for request in uow.session.scalars(select(DeletionRequest)):
                    actions = done.get(request.id, [])
                    assert actions.count("deletion_request.anonymised") == int(request.anonymised_at is not None)
                    assert actions.count("deletion_request.completed") == int(request.status == "completed")
                    assert actions.count("deletion_request.restored") == int(request.status == "restored")
                    if "deletion_request.completed" in actions:
                        assert "deletion_request.restored" not in actions

        @invariant()
        def audit_chain_verifies(self) -> None:
            assert self.c.audit.verify().ok

    run_state_machine_as_test(Lifecycle, settings=settings(
        max_examples=int(os.environ.get("LETHE_STATE_MACHINE_EXAMPLES", "25")), stateful_step_count=25,
        deadline=None, derandomize=not os.environ.get("LETHE_STATE_MACHINE_RANDOM"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
