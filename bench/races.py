"""Benchmark: restore, anonymise and purge of deletion requests racing each other (issue 13).

In-process, no server: like several machines sharing one PostgreSQL. A fresh PostgreSQL database
and a temporary chDB directory, migrated; one project; BENCH_RACES users, each with a profile (a
`name_set` event through IngestService). Two Containers on the same database, each with its own
engine and its own virtual clock: the API side (partner calls, webhooks, the checks) and the job
side (the erasure worker). They share the one embedded ClickHouse (one chDB engine per process).

Races run in rounds of BENCH_RACES_ROUND, one user each, lined up with a threading.Barrier: one
thread per API call, and one thread for the job run, which takes the whole round in one batch.
Each API call waits a random 0..J seconds after the barrier (J: 1.5 x the previous run of that
job, unless BENCH_RACES_JITTER is set), so calls land before, during and after the job.

(a) restore vs anonymise: grace requests just created (`pending`); `DeletionService.restore`
    by request id, while `ErasureService.anonymise(now)` runs (API clock request + 1 s + delay,
    worker clock request + 1 s).
(b) restore vs purge at the grace boundary: grace requests created and anonymised (`in_grace`);
    the API clock is each request's grace_until - 1 s (a restore is allowed), the worker clock
    is the API clock skewed by a random amount in [-BENCH_RACES_SKEW, +BENCH_RACES_SKEW]
    (2 s), per request: the purge is due for those whose skew is >= 1 s (about a quarter).
(c) the same as (a) through the webhook: `delete_profile_confirmed` opens the request, then
    `account_restored` (created_at 1 s + delay later) races the anonymise run.

Every API call is classified as the HTTP layer would answer it: 200 (or 202 for a webhook), the
ServiceError's own code (Conflict: 409, a fine answer; NotFound: 404), or 5xx for any other
exception. A job run that raises counts as a 5xx too; its summary's `failed` is shown apart.

After every round, consistency is checked from the stores, for every request in the database
(a request found wrong once is counted once, under the first thing found):
- `restored`: subject linked (user_id set) and `active`, profile present, `completed_at` unset;
- `completed`: subject unlinked and not `active`, profile gone, no personal value left in
  ClickHouse (read with patch parts off), and a `deletion_request.completed` audit entry;
- `in_grace`: subject `hidden`, linked, profile present; `pending`: subject `active`, linked,
  profile present; `on_hold`/`failed`: linked, profile present, subject `hidden` if the next
  step is the purge, else `active`;
- never both `restored_at` and `completed_at`; in the audit log never `restored` after
  `completed` for one request, never two `completed` or two `restored` entries for one request;
- a restore answered 200 means the request is `restored`; one answered 409 means it is not;
- the audit chain verifies (`AuditService.verify`); a broken chain counts as one inconsistency.

Target (issue 13): 0 inconsistent, 0 5xx.

Settings (environment): BENCH_RACES (1000; split 40% (a), 40% (b), 20% (c)), BENCH_RACES_ROUND
(40 races per round), BENCH_RACES_SKEW (2.0 s), BENCH_RACES_JITTER (adaptive), BENCH_RACES_TIMEOUT
(600 s: no new round starts after it), BENCH_RACES_SEED (random), BENCH_PG_URL, BENCH_STRICT=1,
BENCH_RACES_SEQUENTIAL=1: the control, every call waits until the round's job run has ended, so
nothing races; on any correct code (and on main as it stands) it must print 0 inconsistent: the
checks accept every legal sequential outcome, so what they count in a real run is the races.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import REPO, env_float, env_int, exit_on_sigterm, postgres_database

PROJECT = "bench-races"
KINDS = ("a", "b", "c")
LABELS = {"a": "restore vs anonymise", "b": "restore vs purge, grace boundary",
          "c": "webhook restore vs anonymise"}
SHARE = {"a": 0.4, "b": 0.4, "c": 0.2}
# Each kind has its own stretch of virtual time, far enough apart that one kind's job runs never
# find another kind's requests due (a purge at 2026-02 cannot reach a grace ending in 2027).
EPOCH = {"b": datetime(2026, 1, 5, tzinfo=UTC), "a": datetime(2027, 1, 4, tzinfo=UTC),
         "c": datetime(2028, 1, 3, tzinfo=UTC)}
PROFILES_AT = datetime(2025, 12, 1, tzinfo=UTC)
ROUND_SPACING = timedelta(hours=1)
THREAD_TIMEOUT = 120.0  # one API call or job run; PostgreSQL breaks deadlocks within a second
EXAMPLES = 8


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class VirtualClock:
    """A clock the bench sets: one shared reading, which a thread may override for its own calls
    (each API call runs on its own thread, with its own machine's notion of now)."""

    def __init__(self, start: datetime) -> None:
        self._shared = start
        self._local = threading.local()

    def __call__(self) -> datetime:
        mine: datetime | None = getattr(self._local, "at", None)
        return mine if mine is not None else self._shared

    def set(self, at: datetime) -> None:
        self._shared = at

    def set_mine(self, at: datetime) -> None:
        self._local.at = at


@dataclass
class Race:
    kind: str
    user: str
    request_id: str = ""
    answer: int | None = None  # what the HTTP layer would answer
    detail: str = ""
    skew: float = 0.0  # (b): worker clock minus API clock, seconds
    due: bool = False  # (b): the purge was due by the worker's clock


@dataclass
class Tally:
    races: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # first few 5xx, described
    job_runs: Counter[str] = field(default_factory=Counter)
    job_crashes: Counter[str] = field(default_factory=Counter)
    job_failed: Counter[str] = field(default_factory=Counter)  # summaries' `failed`
    job_seconds: dict[str, list[float]] = field(default_factory=dict)
    setup_failed: int = 0
    due: int = 0
    # request id (or "audit chain") -> (kind, what is wrong), as first found
    inconsistent: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    @property
    def five_xx(self) -> int:
        return sum(n for (_kind, code), n in self.answers.items() if code >= 500) + sum(self.job_crashes.values())

    def error(self, text: str) -> None:
        if len(self.errors) < EXAMPLES:
            self.errors.append(text)


def _envelope(event: str, user: str, at: datetime, **extra: Any) -> dict[str, Any]:
    from tests.fixtures.platform import frontend

    envelope = frontend(event, user, created_at=at.isoformat().replace("+00:00", "Z"), project=PROJECT, **extra)
    envelope["value"].pop("decrypted_user_id", None)  # one shared referenced user would be a hot row
    return envelope


def _describe(exc: BaseException) -> str:
    """The exception's type and its telling line (SQLAlchemy puts an autoflush note first)."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("(raised as a result")]
    return f"{type(exc).__name__}: {lines[0][:160] if lines else ''}"


def _classify(exc: BaseException) -> int:
    from app.http.errors import status_of
    from app.services.errors import ServiceError

    return status_of(exc) if isinstance(exc, ServiceError) else 500


class Bench:
    def __init__(self, database_url: str, clickhouse_dir: str, *, round_size: int, skew: float,
                 jitter: float | None, seed: int, sequential: bool = False) -> None:
        from app.bootstrap import Container
        from app.config import Settings
        from app.services.policies import PolicyBook
        from app.stores.clickhouse.client import ClickHouse
        from app.stores.sql.engine import make_engine

        self.round_size, self.skew, self.fixed_jitter, self.sequential = round_size, skew, jitter, sequential
        self.rng = random.Random(seed)
        self.api_clock = VirtualClock(PROFILES_AT)
        self.worker_clock = VirtualClock(PROFILES_AT)
        settings = Settings(database_url, f"chdb://{clickhouse_dir}", REPO / "policies", b"bench-races", False)
        policies = PolicyBook.load(REPO / "policies")
        self.ch = ClickHouse(settings.clickhouse_url)
        # Two "machines": each its own engine (connection pool) and clock, one database.
        self.api = Container(settings, make_engine(database_url), policies, clock=self.api_clock, clickhouse=self.ch)
        self.worker = Container(settings, make_engine(database_url), policies, clock=self.worker_clock,
                                clickhouse=self.ch)
        self.api.migrate()
        keys = self.api.accounts.create_project(PROJECT)
        principal = self.api.accounts.authenticate(keys.api_key)
        assert principal is not None
        self.project_id: str = principal.project_id
        self.tally = Tally()
        self.races: dict[str, Race] = {}  # request id -> its race
        self.kind_of: dict[str, str] = {}

    def close(self) -> None:
        self.api.engine.dispose()
        self.worker.engine.dispose()
        self.ch.close()

    # --- setup --------------------------------------------------------------------------
    def profiles(self, users: Sequence[str]) -> None:
        """A `name_set` event per user, so each has a profile (and a ClickHouse row) to lose."""
        self.api_clock.set(PROFILES_AT)
        for i in range(0, len(users), 500):
            body = [_envelope("name_set", u, PROFILES_AT, user_name=f"Name {u}") for u in users[i:i + 500]]
            result = self.api.ingest.ingest(self.project_id, PROJECT, json.dumps(body).encode())
            if result.rejected:
                raise RuntimeError(f"profile events not accepted: {result.as_dict()}")

    def _open(self, user: str, at: datetime) -> Any:  # the request as the API shows it (DeletionRequestOut)
        from app.domain.requests import Mode

        self.api_clock.set(at)
        outcome = self.api.deletions.request(self.project_id, user, Mode.GRACE, None, actor="partner:bench")
        if not outcome.created:
            raise RuntimeError("a new request found one already open")
        return outcome.body

    def _jitter(self, job: str) -> float:
        if self.fixed_jitter is not None:
            return self.fixed_jitter
        seen = self.tally.job_seconds.get(job)
        return min(3.0, max(0.2, 1.5 * seen[-1])) if seen else 0.5

    # --- one round ------------------------------------------------------------------------
    def round(self, kind: str, index: int, users: Sequence[str]) -> str:
        base = EPOCH[kind] + index * ROUND_SPACING
        if kind == "a":
            return self._round_a(base, users)
        if kind == "b":
            return self._round_b(base, users)
        return self._round_c(base, users)

    def _round_a(self, base: datetime, users: Sequence[str]) -> str:
        races = []
        for user in users:
            body = self._open(user, base)
            races.append(Race("a", user, body.id))
        jitter = self._jitter("anonymise")
        calls = []
        for race in races:
            delay = self.rng.uniform(0, jitter)
            calls.append((race, delay, base + timedelta(seconds=1 + delay)))
        return self._fire("anonymise", base + timedelta(seconds=1), calls, self._restore)

    def _round_b(self, base: datetime, users: Sequence[str]) -> str:
        grace = timedelta(days=self.api.policies.for_project(PROJECT).grace_days)
        worker_now = base + grace  # the purging worker's clock in the race
        races, api_now = [], {}
        for user in users:
            skew = self.rng.uniform(-self.skew, self.skew)
            # the API clock (grace_until - 1 s) + skew = the worker clock
            body = self._open(user, worker_now - grace + timedelta(seconds=1 - skew))
            race = Race("b", user, body.id)
            grace_until = datetime.fromisoformat(body.grace_until)
            api_now[race.request_id] = grace_until - timedelta(seconds=1)
            race.skew = (worker_now - api_now[race.request_id]).total_seconds()
            race.due = grace_until <= worker_now
            races.append(race)
        # make them `in_grace` first: an anonymise run a minute after the last one was created
        setup_now = base + timedelta(minutes=1)
        self.worker_clock.set(setup_now)
        summary = self.worker.erasure.anonymise(setup_now)
        self.tally.setup_failed += summary.failed
        jitter = self._jitter("purge")
        calls = [(race, self.rng.uniform(0, jitter), api_now[race.request_id]) for race in races]
        self.tally.due += sum(race.due for race in races)
        return self._fire("purge", worker_now, calls, self._restore)

    def _round_c(self, base: datetime, users: Sequence[str]) -> str:
        self.api_clock.set(base)
        body = [_envelope("delete_profile_confirmed", u, base) for u in users]
        result = self.api.ingest.ingest(self.project_id, PROJECT, json.dumps(body).encode())
        if result.rejected:
            raise RuntimeError(f"delete_profile_confirmed not accepted: {result.as_dict()}")
        from sqlalchemy import select

        from app.models import DeletionRequest, Subject

        by_key = {self.api.identities.lookup(self.project_id, user): user for user in users}  # ids are sealed
        with self.api.uow() as uow:
            found = {by_key[key]: request_id for key, request_id in uow.session.execute(
                select(Subject.user_key, DeletionRequest.id).join(Subject, Subject.id == DeletionRequest.subject_id)
                .where(Subject.project_id == self.project_id, Subject.user_key.in_(list(by_key)))).all()}
        if len(found) != len(users):
            raise RuntimeError(f"delete_profile_confirmed opened {len(found)} requests for {len(users)} users")
        races = [Race("c", user, found[user]) for user in users]
        jitter = self._jitter("anonymise")
        calls = []
        for race in races:
            delay = self.rng.uniform(0, jitter)
            calls.append((race, delay, base + timedelta(seconds=1 + delay)))
        self.api_clock.set(base + timedelta(seconds=1))  # what the group-commit thread reads
        return self._fire("anonymise", base + timedelta(seconds=1), calls, self._account_restored)

    # --- the racers -----------------------------------------------------------------------
    def _restore(self, race: Race) -> None:
        self.api.deletions.restore(self.project_id, race.request_id, actor="partner:bench")
        race.answer = 200

    def _account_restored(self, race: Race) -> None:
        at = self.api_clock()
        body = json.dumps([_envelope("account_restored", race.user, at)]).encode()
        result = self.api.ingest.ingest(self.project_id, PROJECT, body)
        race.answer = 400 if result.nothing_accepted else 202
        if result.rejected:
            race.detail = str(result.rejected)[:200]

    def _fire(self, job: str, worker_now: datetime, calls: Sequence[tuple[Race, float, datetime]],
              call: Callable[[Race], None]) -> str:
        """The job run and every call, lined up on one barrier; returns the round's summary."""
        barrier = threading.Barrier(len(calls) + 1)
        job_done = threading.Event()
        outcome: dict[str, Any] = {}

        def racer(race: Race, delay: float, api_now: datetime) -> None:
            self.api_clock.set_mine(api_now)
            barrier.wait()
            if self.sequential:  # the control: no race, each call after the job run
                job_done.wait(THREAD_TIMEOUT)
            time.sleep(delay)
            try:
                call(race)
            except Exception as exc:
                race.answer = _classify(exc)
                race.detail = _describe(exc)

        def worker() -> None:
            self.worker_clock.set(worker_now)
            run = self.worker.erasure.anonymise if job == "anonymise" else self.worker.erasure.purge
            barrier.wait()
            started = time.perf_counter()
            try:
                outcome["summary"] = run(worker_now)
            except Exception as exc:
                outcome["crash"] = _describe(exc)
            finally:
                outcome["seconds"] = time.perf_counter() - started
                job_done.set()

        threads = [threading.Thread(target=racer, args=c, name=f"api-{i}", daemon=True) for i, c in enumerate(calls)]
        threads.append(threading.Thread(target=worker, name=f"job-{job}", daemon=True))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + THREAD_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError(f"a racer or the {job} run did not finish within {THREAD_TIMEOUT:.0f} s")

        kind = calls[0][0].kind
        tally = self.tally
        tally.job_runs[job] += 1
        tally.job_seconds.setdefault(job, []).append(outcome.get("seconds", 0.0))
        if "crash" in outcome:
            tally.job_crashes[job] += 1
            tally.error(f"({kind}) {job} run crashed: {outcome['crash']}")
        summary = outcome.get("summary")
        if summary is not None:
            tally.job_failed[job] += summary.failed
        answers: Counter[int] = Counter()
        for race, _delay, _now in calls:
            assert race.answer is not None
            tally.races[kind] += 1
            tally.answers[(kind, race.answer)] += 1
            answers[race.answer] += 1
            self.races[race.request_id] = race
            self.kind_of[race.request_id] = kind
            if race.answer >= 500:
                tally.error(f"({kind}) request {race.request_id}: {race.detail}")
        codes = " ".join(f"{code}:{n}" for code, n in sorted(answers.items()))
        ran = (f"{job} {outcome['seconds']:.2f} s" if summary is None else
               f"{job} {outcome['seconds']:.2f} s processed {summary.processed} failed {summary.failed}")
        if "crash" in outcome:
            ran += " CRASHED"
        due = f", purge due for {sum(r.due for r, _d, _n in calls)}" if kind == "b" else ""
        return f"calls {codes}; {ran}{due}"

    # --- consistency ----------------------------------------------------------------------
    def check(self) -> int:
        """Every request against the stores; returns how many were newly found inconsistent."""
        from sqlalchemy import select

        from app.models import AuditEntry, DeletionRequest, Profile, Subject
        from app.stores.clickhouse.events import _PLAINTEXT

        with self.api.uow() as uow:
            rows = uow.session.execute(
                select(DeletionRequest.id, DeletionRequest.status, DeletionRequest.next_step,
                       DeletionRequest.restored_at, DeletionRequest.completed_at, Subject.id, Subject.user_id,
                       Subject.status, Profile.subject_id)
                .join(Subject, Subject.id == DeletionRequest.subject_id)
                .outerjoin(Profile, Profile.subject_id == DeletionRequest.subject_id)).all()
            audit = uow.session.execute(
                select(AuditEntry.seq, AuditEntry.action, AuditEntry.details)
                .where(AuditEntry.action.like("deletion_request.%")).order_by(AuditEntry.seq)).all()
        trail: dict[str, list[str]] = {}
        for _seq, action, details in audit:
            request_id = (details or {}).get("request_id")
            if request_id:
                trail.setdefault(str(request_id), []).append(action.removeprefix("deletion_request."))
        completed_subjects = [row[5] for row in rows if row[1] == "completed"]
        left: dict[str, int] = {}
        if completed_subjects:
            # readable personal values: plaintext on disk (patch parts off), or ciphertext whose
            # subject still has its analytics key (erasure destroys it)
            left = {str(s): int(n) for s, n in self.ch.rows(
                f"SELECT toString(subject_id), count() FROM events WHERE subject_id IN {{ids:Array(UUID)}} "
                f"AND ({_PLAINTEXT}) GROUP BY subject_id",
                parameters={"ids": [uuid.UUID(s) for s in completed_subjects]}, settings={"apply_patch_parts": 0})}
            with self.api.uow() as uow:
                for subject in uow.keys.get(completed_subjects, "analytics"):
                    left[subject] = left.get(subject, 0) + 1

        new = 0
        for request_id, status, next_step, restored_at, completed_at, subject_id, user_id, subject_status, \
                profile in rows:
            problems = _problems(status, next_step, restored_at, completed_at, user_id, subject_status,
                                 profile is not None, left.get(subject_id, 0), trail.get(request_id, []))
            race = self.races.get(request_id)
            if race is not None and race.kind in ("a", "b"):
                if race.answer == 200 and status != "restored":
                    problems.append(f"the restore answered 200 but the request is {status}")
                if race.answer == 409 and status == "restored":
                    problems.append("the restore answered 409 but the request is restored")
            if problems and request_id not in self.tally.inconsistent:
                self.tally.inconsistent[request_id] = (self.kind_of.get(request_id, "?"), problems)
                new += 1
        verification = self.api.audit.verify()
        if not verification.ok and "audit chain" not in self.tally.inconsistent:
            self.tally.inconsistent["audit chain"] = ("-", [f"the audit chain does not verify: {verification}"])
            new += 1
        return new

    def statuses(self) -> dict[str, Counter[str]]:
        from sqlalchemy import select

        from app.models import DeletionRequest

        with self.api.uow() as uow:
            rows = uow.session.execute(select(DeletionRequest.id, DeletionRequest.status)).all()
        found: dict[str, Counter[str]] = {}
        for request_id, status in rows:
            found.setdefault(self.kind_of.get(request_id, "?"), Counter())[status] += 1
        return found


def _problems(status: str, next_step: str, restored_at: datetime | None, completed_at: datetime | None,
              user_id: str | None, subject_status: str, has_profile: bool, personal_left: int,
              trail: Sequence[str]) -> list[str]:
    """What is wrong with one request, from its row, its subject's and the audit trail."""
    found = []
    linked = user_id is not None
    if status == "restored":
        if not linked:
            found.append("restored but the link is destroyed")
        if subject_status != "active":
            found.append(f"restored but the subject is {subject_status}")
        if not has_profile:
            found.append("restored but the profile is gone")
        if completed_at is not None:
            found.append("restored with completed_at set")
    elif status == "completed":
        if linked:
            found.append("completed but the subject is still linked")
        if subject_status == "active":
            found.append("completed but the subject is active")
        if has_profile:
            found.append("completed but the profile is still there")
        if personal_left:
            found.append(f"completed but {personal_left} personal values still readable (plaintext rows or a live key)")
        if "completed" not in trail:
            found.append("completed without a deletion_request.completed audit entry")
    elif status in ("pending", "in_grace", "on_hold", "failed"):
        want = "hidden" if status == "in_grace" or (status != "pending" and next_step == "purge") else "active"
        if subject_status != want:
            found.append(f"{status} (next step {next_step}) but the subject is {subject_status}, not {want}")
        if not linked:
            found.append(f"{status} but the link is destroyed")
        if not has_profile:
            found.append(f"{status} but the profile is gone")
    if restored_at is not None and completed_at is not None:
        found.append("both restored_at and completed_at are set")
    if "completed" in trail and "restored" in trail[trail.index("completed"):]:
        found.append("the audit log shows restored after completed")
    for action in ("completed", "restored"):
        if trail.count(action) > 1:
            found.append(f"{trail.count(action)} deletion_request.{action} audit entries")
    return found


def main() -> int:
    total = env_int("BENCH_RACES", 1000)
    round_size = env_int("BENCH_RACES_ROUND", 40)
    skew = env_float("BENCH_RACES_SKEW", 2.0, allow_zero=True)
    jitter_raw = os.environ.get("BENCH_RACES_JITTER", "").strip()
    jitter = env_float("BENCH_RACES_JITTER", 0.5, allow_zero=True) if jitter_raw else None
    timeout = env_float("BENCH_RACES_TIMEOUT", 600)
    seed = env_int("BENCH_RACES_SEED", random.SystemRandom().randrange(1, 1 << 30))
    sequential = os.environ.get("BENCH_RACES_SEQUENTIAL", "").strip() in {"1", "true", "yes"}
    strict = os.environ.get("BENCH_STRICT", "").strip() in {"1", "true", "yes"}
    exit_on_sigterm()

    from app.logging import configure_logging

    configure_logging("warning")  # the jobs' progress lines would drown the bench's own

    per_kind = {k: int(total * SHARE[k]) for k in KINDS}
    per_kind["a"] += total - sum(per_kind.values())
    plan: list[tuple[str, int, int]] = []  # (kind, round index, races), rounds of one kind evenly sized
    for kind in KINDS:
        rounds = -(-per_kind[kind] // round_size)
        for index in range(rounds):
            plan.append((kind, index, per_kind[kind] // rounds + (index < per_kind[kind] % rounds)))
    plan.sort(key=lambda p: (p[1], KINDS.index(p[0])))  # interleaved: a, b, c, a, b, c, ...

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"races:   {total} ({', '.join(f'{per_kind[k]} {k}: {LABELS[k]}' for k in KINDS)}), "
          f"{len(plan)} rounds of up to {round_size}; purge clock skew +-{skew:g} s; "
          f"jitter {'adaptive' if jitter is None else f'{jitter:g} s'}; seed {seed}"
          f"{'; SEQUENTIAL control: every call waits for the job run, nothing races' if sequential else ''}")
    print("target:  0 inconsistent, 0 5xx")
    sys.stdout.flush()

    started = time.perf_counter()
    with postgres_database("lethe_bench_races") as database_url, \
            tempfile.TemporaryDirectory(prefix="lethe-bench-races-") as tmp:
        bench = Bench(database_url, f"{tmp}/clickhouse", round_size=round_size, skew=skew, jitter=jitter,
                      seed=seed, sequential=sequential)
        try:
            users = {(kind, index): [f"race-{kind}-{index}-{i}" for i in range(n)] for kind, index, n in plan}
            bench.profiles([u for group in users.values() for u in group])
            setup = time.perf_counter() - started
            print(f"setup:   PostgreSQL {database_url.rsplit('/', 1)[1]}, chDB in {tmp}; "
                  f"{sum(len(g) for g in users.values())} users with a profile in {setup:.1f} s\n", flush=True)
            stopped_early = False
            for number, (kind, index, _n) in enumerate(plan, 1):
                if time.perf_counter() - started > timeout:
                    print(f"BENCH_RACES_TIMEOUT ({timeout:g} s) reached: {len(plan) - number + 1} rounds not run")
                    stopped_early = True
                    break
                round_started = time.perf_counter()
                line = bench.round(kind, index, users[(kind, index)])
                new = bench.check()
                print(f"  round {number:3}/{len(plan)} ({kind}) {time.perf_counter() - round_started:5.2f} s: "
                      f"{line}; inconsistent +{new} (total {len(bench.tally.inconsistent)}), "
                      f"5xx total {bench.tally.five_xx}", flush=True)
            bench.check()
            statuses = bench.statuses()
        finally:
            bench.close()
    seconds = time.perf_counter() - started

    tally = bench.tally
    ran = sum(tally.races.values())
    print("\nresult:")
    for kind in KINDS:
        answers = ", ".join(f"{code}: {n}" for (k, code), n in sorted(tally.answers.items()) if k == kind)
        final = ", ".join(f"{status} {n}" for status, n in sorted(statuses.get(kind, Counter()).items()))
        print(f"  ({kind}) {LABELS[kind]:<34} {tally.races[kind]:5} races; answers {answers or '-'}; "
              f"requests now {final or '-'}")
    print(f"  (b) the purge was due by the worker's clock for {tally.due} of {tally.races['b']} "
          f"(skew >= 1 s of +-{skew:g} s)")
    for job in ("anonymise", "purge"):
        times = sorted(tally.job_seconds.get(job, []))
        median = times[len(times) // 2] if times else float("nan")
        print(f"  {job} runs in the rounds: {tally.job_runs[job]}, crashed {tally.job_crashes[job]}, "
              f"requests failed {tally.job_failed[job]}, median {median:.2f} s")
    if tally.setup_failed:
        print(f"  (b) setup anonymise runs failed {tally.setup_failed} requests")
    per = Counter(kind for kind, _problems in tally.inconsistent.values())
    print(f"  inconsistent: {len(tally.inconsistent)} ({', '.join(f'{k}: {per[k]}' for k in KINDS)})")
    findings: dict[str, list[str]] = {}  # finding -> where it was found (as first found)
    for key, (kind, problems) in tally.inconsistent.items():
        for finding in problems:
            findings.setdefault(re.sub(r"\d+", "N", finding), []).append(f"({kind}) {key}")
    for finding, where in sorted(findings.items(), key=lambda f: -len(f[1]))[:EXAMPLES]:
        print(f"    {len(where):4} x {finding}: e.g. {', '.join(where[:2])}")
    for kind in KINDS:  # the first example of each kind, with everything found wrong with it
        example = next(((key, problems) for key, (k, problems) in tally.inconsistent.items() if k == kind), None)
        if example is not None:
            print(f"    first ({kind}): request {example[0]}: {'; '.join(example[1])}")
    if "audit chain" in tally.inconsistent:
        print(f"    {tally.inconsistent['audit chain'][1][0]}")
    print(f"  5xx: {tally.five_xx}")
    for text in tally.errors:
        print(f"    {text}")
    print(f"  time: {seconds:.1f} s")
    ok = not tally.inconsistent and tally.five_xx == 0
    print(f"races: {ran} run, {len(tally.inconsistent)} inconsistent, {tally.five_xx} 5xx "
          f"(target: 0 inconsistent, 0 5xx) {_verdict(ok)}")
    if stopped_early:
        return 1
    return 1 if strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
