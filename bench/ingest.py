"""Benchmark: the events webhook, POST /v1/events, against ClickHouse's own insert rate.

Three measurements, in this order:

(b) direct: in a child process (one chDB engine per process; the server holds its own directory),
    a fresh chDB directory with Lethe's events schema gets pre-built rows (the exact values
    IngestService would store for the same envelopes: personal values AES-256-GCM ciphertext,
    encrypted before the timing starts) through the app's ClickHouse wrapper
    (`clickhouse-connect`, 1,000-row blocks, each with a deduplication token) for BENCH_SECONDS;
(d) with / without encryption: in another child process, IngestService.ingest in process
    (PostgreSQL, its own chDB directory, no HTTP) on 1,000-envelope bodies, three variants
    interleaved in BENCH_CRYPTO_ROUNDS rounds, BENCH_CRYPTO_SECONDS per variant in all, after a
    warm-up (one frontend and one backend event of every user, so that every user has a subject
    and keys, then 5 s); only the ingest calls are timed. "with encryption"
    is the app as it is; "keys, no AES" monkeypatches Cipher.encrypt to return the plaintext;
    "without encryption" monkeypatches KeyService.ciphers to hand out a plaintext stand-in (no
    key table, no AES: the path before 7d9d04d). The app's code is not changed;
(a) batches: a real `lethe serve` (PostgreSQL, embedded chDB in a temporary working directory,
    scheduler on) gets POST /v1/events with arrays of 1,000 realistic envelopes from
    BENCH_BATCH_CONCURRENCY connections for BENCH_SECONDS; a 202 means the events and their
    effects are committed in PostgreSQL (the ingest outbox);
(c) single events: the same server gets one envelope per request from BENCH_CONCURRENCY
    connections for BENCH_SECONDS;
(e) the drain: the same server's scheduler moves the outbox into ClickHouse meanwhile. Its rate
    is what it moved during each phase (the server's /metrics, lethe_job_processed_total for
    job "outbox"), beside the backlog left at the end of the phase and the time to empty it.

Envelopes follow the platform's reference payloads (tests/fixtures/platform.py): frontend events
(user_id of ~BENCH_USERS users, names, user agent, source URL), message_sent with a unique
message_id and text, backend events with external_user_id; every envelope has a unique
created_at (microsecond steps from the start of the run), so deduplication drops none.

Targets (issue): (a) >= 50% of the direct rate; (c) >= 3,000 events/s; (d) with encryption
>= 90% of without (issue 7); (e) the drain keeps up with what was acknowledged.
Afterwards the stored counts are checked: event_receipts in PostgreSQL, the outbox empty, rows
in the server's chDB directory (opened in a child process once the server has stopped) and dead
letters.

Settings (environment): BENCH_SECONDS (30), BENCH_WARMUP_SECONDS (2), BENCH_BATCH_CONCURRENCY (2),
BENCH_BATCH_SIZE (1000), BENCH_CONCURRENCY (32, single-event phase), BENCH_USERS (10000),
BENCH_CRYPTO_SECONDS (15), BENCH_CRYPTO_ROUNDS (3),
BENCH_CLIENT (raw | httpx), BENCH_PG_URL, BENCH_STRICT=1 (a MISS fails the run).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import (
    REPO,
    LetheProcess,
    PhaseResult,
    Request,
    env_client,
    env_float,
    env_int,
    exit_on_sigterm,
    postgres_database,
    query_database,
    run_load,
)
from tests.fixtures.platform import SESSION_STARTED

PROJECT = "bench-prod"
TARGET_RATIO = 0.5
TARGET_SINGLE_EPS = 3000.0
TARGET_CRYPTO = 0.9  # issue 7: batch ingest with encryption >= 90% of the same path without it

WORDS = ("goal", "what", "a", "save", "referee", "offside", "penalty", "great", "match", "the", "team", "is",
         "playing", "well", "today", "no", "way", "come", "on", "keeper", "shot", "corner", "half", "time",
         "score", "again", "really", "who", "wins", "final")
FRONTEND = ("session_started", "room_opened", "message_liked", "poll_voted", "profile_opened")
BACKEND = ("user_join", "user_leave", "reaction_create", "user_login", "thread_create")
AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15",
          "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class EventFactory:
    """Realistic webhook envelopes, cheap to make (the load generator shares the machine).

    Mix per 10 envelopes: 2 message_sent (unique message_id, text), 4 other frontend events
    (one in five names another user: profile_user_id), 4 backend events (external_user_id).
    """

    def __init__(self, project: str, users: int, seed: int, start: datetime | None = None,
                 user_ids: Sequence[str] | None = None) -> None:
        """`user_ids`: the ids users have in both frontend (user_id) and backend (external_user_id)
        events; by default frontend ids are opaque base64 strings and backend ids `user_<n>`."""
        self.project = project
        self.users = users
        self.rng = random.Random(seed)
        self.tag = f"{seed:x}"
        self.seq = itertools.count()
        self.start = (start or datetime.now(UTC)).replace(tzinfo=None)
        self.frontend_ids = list(user_ids) if user_ids is not None else [
            base64.b64encode(hashlib.sha256(f"{seed}:{n}".encode()).digest()[:16]).decode() for n in range(users)]
        self.backend_ids = list(user_ids) if user_ids is not None else [f"user_{n}" for n in range(users)]
        template = dict(SESSION_STARTED["value"])
        template.pop("room_status", None)
        template["project"] = project
        self.template = template

    def envelope(self, *, at: datetime | None = None, user: int | None = None,
                 backend: bool | None = None) -> dict[str, Any]:
        """`backend`: a backend (True) or frontend (False) event, instead of the mix."""
        i = next(self.seq)
        rng = self.rng
        n = rng.randrange(self.users) if user is None else user
        moment = at.replace(tzinfo=None) if at is not None else self.start + timedelta(microseconds=i)
        created = moment.isoformat(timespec="microseconds") + "Z"
        room = str(16888000 + rng.randrange(200))
        kind = i % 10 if backend is None else 6 if backend else 1
        if kind >= 6:
            name = BACKEND[rng.randrange(len(BACKEND))]
            value: dict[str, Any] = {"project": self.project, "external_user_id": self.backend_ids[n], "room_id": room,
                                     "created_at": created}
            if name == "reaction_create":
                value.update(message_id=f"m-{self.tag}-{rng.randrange(i + 1)}", reaction="👍")
            elif name == "user_login":
                value["ip"] = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            elif name == "thread_create":
                value["thread_id"] = f"thread_{i}"
            return {"event": name, "value": value}
        value = dict(self.template)
        value.update(user_id=self.frontend_ids[n], user_name=f"User {n}", nickname=f"user{n}",
                     decrypted_user_id=f"user_{n}", created_at=created, event_id=room,
                     source_url=f"https://chat.example.com/room/{room}",
                     platformUserAgent=AGENTS[n % len(AGENTS)], platform=("web", "ios", "android")[n % 3])
        if kind < 2:
            name = "message_sent"
            words = rng.randrange(3, 16)
            value.update(message_id=f"m-{self.tag}-{i}", room=room, messageType="text",
                         text=" ".join(WORDS[rng.randrange(len(WORDS))] for _ in range(words)))
        else:
            name = FRONTEND[rng.randrange(len(FRONTEND))]
            if name == "profile_opened":
                value["profile_user_id"] = self.frontend_ids[rng.randrange(self.users)]
        value["event_name"] = name
        return {"event": name, "value": value, "key": SESSION_STARTED["key"]}

    def batch(self, size: int) -> list[dict[str, Any]]:
        return [self.envelope() for _ in range(size)]

    def everyone(self) -> list[dict[str, Any]]:
        """One frontend and one backend event of every user: after them, every user's subject
        and keys exist."""
        return [self.envelope(user=n, backend=backend) for n in range(self.users) for backend in (False, True)]


# --- (b) direct insert, in a child process ----------------------------------------------------
def _rows_for(envelopes: list[dict[str, Any]], subjects: dict[str, str], received: datetime,
              ciphers: dict[str, Any]) -> list[list[Any]]:
    """The events-table values IngestService would store for these envelopes (active subjects):
    personal values as real ciphertext (encrypted here, before the timing starts)."""
    from app.domain.crypto import Cipher, new_data_key
    from app.domain.events import Actor, parse_envelope
    from app.ports import EventRow
    from app.services.policies import PolicyBook
    from app.stores.clickhouse.events import column_values

    properties = PolicyBook.load(REPO / "policies").properties  # the data map, as ingest reads it
    rows = []
    for envelope in envelopes:
        event = parse_envelope(envelope, PROJECT, received, properties, b"bench-dedup-" * 3)
        for key in [event.actor.key] if event.actor else []:
            subjects.setdefault(key, str(uuid.uuid4()))
        refs: dict[str, str | list[str]] = {}  # as IngestService stores them: one id, or a list for a list
        for k, users in event.user_refs.items():
            ids = [subjects.setdefault(Actor("user", u).key, str(uuid.uuid4())) for u in users]
            refs[k] = ids if isinstance(event.raw_value.get(k), list) or len(ids) != 1 else ids[0]
        # sealed as IngestService seals them (the default policy stores no IP), one key per actor
        owner = event.actor.key if event.actor else "no-actor"
        cipher = ciphers.get(owner) or ciphers.setdefault(owner, Cipher(new_data_key()))
        personal = {c: cipher.encrypt(v, c.encode()) for c, v in event.personal.items() if v and c != "ip"}
        row = EventRow(
            project=PROJECT, event=event.event, at=event.at, received_at=received,
            subject_id=subjects[event.actor.key] if event.actor else None,
            actor_kind=event.actor.kind if event.actor else "", dedup_key=event.dedup_key, room_id=event.room_id,
            message_id=event.message_id, platform=event.platform, personal=personal,
            properties=refs,
        )
        rows.append(column_values(row))
    return rows


def direct_child() -> None:
    """Entry point of the child process: prints one JSON line with the result."""
    from app.stores.clickhouse.client import ClickHouse
    from app.stores.clickhouse.events import COLUMNS
    from app.stores.clickhouse.schema import migrate

    seconds, batch_size, users, blocks = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    factory = EventFactory(PROJECT, users, seed=2)
    subjects: dict[str, str] = {}
    received = datetime.now(UTC)
    built = time.perf_counter()
    ciphers: dict[str, Any] = {}
    prepared = [_rows_for(factory.batch(batch_size), subjects, received, ciphers) for _ in range(blocks)]
    built = time.perf_counter() - built
    with tempfile.TemporaryDirectory(prefix="lethe-bench-direct-") as tmp:
        ch = ClickHouse(f"chdb://{tmp}/clickhouse")
        try:
            migrate(ch)
            ch.insert("events", prepared[0], COLUMNS, settings={"insert_deduplication_token": "warm-up"})
            inserted, latencies = 0, []
            cpu0, started = time.process_time(), time.perf_counter()
            for i in itertools.count():
                now = time.perf_counter()
                if now - started >= seconds:
                    break
                ch.insert("events", prepared[i % blocks], COLUMNS, settings={"insert_deduplication_token": f"d-{i}"})
                latencies.append(time.perf_counter() - now)
                inserted += len(prepared[i % blocks])
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
            stored = int(ch.rows("SELECT count() FROM events")[0][0])
            parts = int(ch.rows("SELECT count() FROM system.parts WHERE table = 'events' AND active")[0][0])
        finally:
            ch.close()
    latencies.sort()
    print(json.dumps({"rows": inserted, "seconds": elapsed, "cpu": cpu, "stored": stored, "parts": parts,
                      "blocks": len(latencies), "build_seconds": built, "prepared_rows": blocks * batch_size,
                      "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
                      "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")}))


def _run_direct(seconds: float, batch_size: int, users: int) -> dict[str, Any]:
    blocks = 20
    code = "import bench.ingest as m; m.direct_child()"
    done = subprocess.run([sys.executable, "-c", code, str(seconds), str(batch_size), str(users), str(blocks)],
                          cwd=REPO, capture_output=True, text=True, timeout=seconds + 300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"direct insert child exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- (d) the same ingest path with and without encryption, in a child process ---------------
VARIANTS = ("with encryption", "keys, no AES", "without encryption")


class _Plain:
    """Stands in for app.domain.crypto.Cipher in the 'without' variants: returns the plaintext."""

    def encrypt(self, plaintext: str, aad: bytes = b"") -> str:
        return plaintext


def _variant(name: str) -> contextlib.AbstractContextManager[Any]:
    """The app, unchanged, with its encryption taken out by monkeypatching (this process only):
    'keys, no AES': Cipher.encrypt returns the plaintext (key lookups and creation still run);
    'without encryption': KeyService.ciphers hands out a plaintext stand-in for every owner
    without touching the key table (no key lookups, no key creation, no AES): the path as it
    was before 7d9d04d, storing plaintext."""
    from unittest import mock

    from app.domain.crypto import Cipher
    from app.services.keys import KeyService

    if name == "keys, no AES":
        return mock.patch.object(Cipher, "encrypt", lambda self, plaintext, aad=b"": plaintext)
    if name == "without encryption":
        plain = _Plain()
        return mock.patch.object(KeyService, "ciphers",
                                 lambda self, uow, owners, purpose, *, create: dict.fromkeys(owners, plain))
    return contextlib.nullcontext()


def crypto_child() -> None:
    """Entry point of the child process: IngestService.ingest in this process (PostgreSQL, chDB in
    a temporary directory, built like tests/conftest.py), the variants interleaved in rounds;
    only the ingest calls are timed (building the next body is not). Prints one JSON line."""
    from app.bootstrap import Container
    from app.config import Settings
    from app.services.policies import PolicyBook
    from app.stores.clickhouse.client import ClickHouse
    from app.stores.sql.engine import make_engine
    from bench.harness import cpu_seconds, machine_cpu_seconds

    seconds, batch_size, users, rounds = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    factory = EventFactory(PROJECT, users, seed=3)
    totals = {name: {"events": 0, "seconds": 0.0, "cpu": 0.0, "machine": 0.0, "calls": 0} for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="lethe-bench-crypto-") as tmp, postgres_database() as url:
        settings = Settings(database_url=url, clickhouse_url="chdb://unused", policy_dir=REPO / "policies",
                            secret_key=b"bench", scheduler=False)
        container = Container(settings=settings, engine=make_engine(url), policies=PolicyBook.load(REPO / "policies"),
                              clickhouse=ClickHouse(f"chdb://{tmp}/clickhouse"))
        try:
            container.migrate()
            container.accounts.create_project(PROJECT)
            with container.uow() as uow:
                project = uow.projects.by_name(PROJECT)
                assert project is not None
                project_id = project.id

            def ingest_for(budget: float, name: str) -> None:
                spent = 0.0
                while spent < budget:
                    body = json.dumps(factory.batch(batch_size)).encode()
                    cpu0, machine0, started = cpu_seconds(), machine_cpu_seconds(), time.perf_counter()
                    result = container.ingest.ingest(project_id, PROJECT, body)
                    took = time.perf_counter() - started
                    if result.rejected or result.duplicates:
                        raise RuntimeError(f"ingest rejected {len(result.rejected)}, duplicates {result.duplicates}")
                    spent += took
                    if name:
                        entry = totals[name]
                        entry["events"] += result.accepted
                        entry["seconds"] += took
                        entry["calls"] += 1
                        entry["cpu"] += cpu_seconds() - cpu0
                        entry["machine"] += machine_cpu_seconds() - machine0

            # warm-up (not counted): every user's subject and keys exist, so no variant pays for
            # creating them (interleaved, the variant that ran first in a round would)
            everyone = factory.everyone()
            for start in range(0, len(everyone), batch_size):
                container.ingest.ingest(project_id, PROJECT, json.dumps(everyone[start:start + batch_size]).encode())
            ingest_for(min(5.0, seconds), "")
            for round_ in range(rounds):
                order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
                for name in order:
                    with _variant(name):
                        ingest_for(seconds / rounds, name)
            container.outbox.drain()  # ingest acknowledged from the outbox; moved into ClickHouse here, untimed
            stored = int(container.clickhouse.rows("SELECT count() FROM events")[0][0])
            plaintext = int(container.clickhouse.rows(
                "SELECT countIf(nickname != '' AND NOT startsWith(nickname, 'v1.')) FROM events")[0][0])
        finally:
            container.close()
    print(json.dumps({"variants": totals, "stored": stored, "plaintext_rows": plaintext}))


def _run_crypto(seconds: float, batch_size: int, users: int, rounds: int) -> dict[str, Any]:
    code = "import bench.ingest as m; m.crypto_child()"
    done = subprocess.run([sys.executable, "-c", code, str(seconds), str(batch_size), str(users), str(rounds)],
                          cwd=REPO, capture_output=True, text=True, timeout=len(VARIANTS) * seconds + 300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"encryption child exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _count_clickhouse_rows(directory: str) -> int:
    """Rows in a stopped server's chDB directory (a child process: one engine per process)."""
    code = ("import sys; from app.stores.clickhouse.client import ClickHouse; "
            "ch = ClickHouse('chdb://' + sys.argv[1]); print(ch.rows('SELECT count() FROM events')[0][0]); ch.close()")
    done = subprocess.run([sys.executable, "-c", code, directory], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"counting rows failed: {done.stderr.strip()[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


# --- the server phases -------------------------------------------------------------------------
def _stored(database_url: str) -> tuple[int, int]:
    receipts = query_database(database_url, "SELECT count(*) FROM event_receipts")[0][0]
    dead = query_database(database_url, "SELECT count(*) FROM dead_letters")[0][0]
    return int(receipts), int(dead)


def _backlog(database_url: str) -> int:
    """Events acknowledged and still waiting in the ingest outbox."""
    return int(query_database(database_url, "SELECT coalesce(sum(count), 0) FROM event_outbox")[0][0])


def _drained(base_url: str) -> int:
    """Events the server's outbox drain has moved into ClickHouse so far (its /metrics)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:  # noqa: S310 - our own server
        text = response.read().decode()
    found = re.search(r'^lethe_job_processed_total\{job="outbox"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _wait_empty(database_url: str, limit: float = 300) -> float:
    started = time.perf_counter()
    while _backlog(database_url) and time.perf_counter() - started < limit:
        time.sleep(0.1)
    return time.perf_counter() - started


Drain = dict[str, float]


def _phase(name: str, base_url: str, make: Callable[[], Request], *, seconds: float, warmup: float,
           concurrency: int, client: str, lethe: LetheProcess, database_url: str) -> tuple[PhaseResult, int, Drain]:
    """run_load with the warm-up done here, so that the events stored during the measured phase
    can be counted (event_receipts before and after), and what the drain moved meanwhile."""
    database = database_url.rsplit("/", 1)[1]
    if warmup > 0:
        run_load(f"{name} (warm-up)", base_url, make, seconds=warmup, concurrency=concurrency, client=client)
        _wait_empty(database_url)
    before, _ = _stored(database_url)
    drained_before = _drained(base_url)
    result = run_load(name, base_url, make, seconds=seconds, concurrency=concurrency, client=client,
                      server_pid=lethe.pid, database=database)
    after, _ = _stored(database_url)
    drain = {"moved": _drained(base_url) - drained_before, "backlog": _backlog(database_url)}
    drain["rate"] = drain["moved"] / result.seconds if result.seconds else 0.0
    drain["empty_after"] = _wait_empty(database_url)
    return result, after - before, drain


def main() -> int:
    seconds = env_float("BENCH_SECONDS", 30)
    warmup = env_float("BENCH_WARMUP_SECONDS", 2, allow_zero=True)
    batch_clients = env_int("BENCH_BATCH_CONCURRENCY", 2)
    batch_size = min(1000, env_int("BENCH_BATCH_SIZE", 1000))
    single_clients = env_int("BENCH_CONCURRENCY", 32)
    users = env_int("BENCH_USERS", 10_000)
    crypto_seconds = env_float("BENCH_CRYPTO_SECONDS", 15)
    crypto_rounds = env_int("BENCH_CRYPTO_ROUNDS", 3)
    client = env_client("raw")
    strict = os.environ.get("BENCH_STRICT", "").strip() in {"1", "true", "yes"}
    exit_on_sigterm()

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"events:  {users:,} users; per 10 envelopes 2 message_sent, 4 other frontend, 4 backend; "
          f"unique created_at")
    print(f"phases:  (b) direct chDB insert {seconds:g} s; (a) POST /v1/events x {batch_size} with "
          f"{batch_clients} connections {seconds:g} s; (c) single-event POSTs with {single_clients} connections "
          f"{seconds:g} s (warm-up {warmup:g} s each)")
    print(f"         (d) IngestService in process, with / without encryption, {crypto_seconds:g} s each")
    print(f"targets: (a) >= {TARGET_RATIO:.0%} of the direct insert rate; (c) >= {TARGET_SINGLE_EPS:,.0f} events/s; "
          f"(d) with encryption >= {TARGET_CRYPTO:.0%} of without")
    sys.stdout.flush()

    print("\n(b) direct insert: app ClickHouse wrapper -> clickhouse-connect -> embedded chDB, "
          f"{batch_size}-row blocks, one process, no server running", flush=True)
    direct = _run_direct(seconds, batch_size, users)
    direct_rate = direct["rows"] / direct["seconds"]
    print(f"  {direct['rows']:,} rows in {direct['seconds']:.1f} s = {direct_rate:,.0f} rows/s "
          f"({direct['blocks']} blocks; per block p50 {direct['p50_ms']:.1f} ms, p99 {direct['p99_ms']:.1f} ms; "
          f"CPU {direct['cpu'] / direct['seconds']:.0%} of a core); stored {direct['stored']:,} rows in "
          f"{direct['parts']} active parts", flush=True)
    print(f"  (building the rows from envelopes, not timed: {direct['prepared_rows']:,} rows in "
          f"{direct['build_seconds']:.2f} s)", flush=True)

    print(f"\n(d) IngestService.ingest in one process (PostgreSQL + chDB, no HTTP), {batch_size}-envelope bodies, "
          f"with and without encryption: {crypto_rounds} rounds of {crypto_seconds / crypto_rounds:.1f} s per "
          "variant, interleaved; only the ingest calls are timed", flush=True)
    print("  'keys, no AES': Cipher.encrypt monkeypatched to return the plaintext (key lookups still run); "
          "'without encryption': KeyService.ciphers monkeypatched to hand out a plaintext stand-in (no key table, "
          "no AES: the path before 7d9d04d). The app itself is unchanged.", flush=True)
    crypto = _run_crypto(crypto_seconds, batch_size, users, crypto_rounds)
    rates = {}
    for name, entry in crypto["variants"].items():
        rates[name] = entry["events"] / entry["seconds"] if entry["seconds"] else 0.0
        other = max(0.0, entry["machine"] - entry["cpu"])
        print(f"  {name:<20} {rates[name]:10,.0f} events/s  ({entry['events']:,} events in {entry['calls']} calls, "
              f"{entry['seconds']:.1f} s; CPU: this process {entry['cpu'] / entry['seconds']:.0%} of a core, "
              f"rest of the machine {other / entry['seconds']:.0%})", flush=True)
    print(f"  stored {crypto['stored']:,} rows (warm-up included; {crypto['plaintext_rows']:,} with a plaintext "
          "nickname: the 'without' variants' rows)", flush=True)

    factory = EventFactory(PROJECT, users, seed=1)
    with postgres_database() as database_url, LetheProcess(database_url, scheduler=True) as lethe:
        keys = lethe.run_json("project", "create", PROJECT)
        base_url = lethe.serve()
        headers = {"Authorization": f"Bearer {keys['webhook_token']}", "Content-Type": "application/json"}
        print(f"\nserver:  lethe serve on {base_url} (PostgreSQL {database_url.rsplit('/', 1)[1]}, "
              "LETHE_SCHEDULER=on, chDB in a temporary directory)", flush=True)

        def batch_request() -> Request:
            return Request("POST", "/v1/events", headers, json.dumps(factory.batch(batch_size)).encode())

        def single_request() -> Request:
            return Request("POST", "/v1/events", headers, json.dumps(factory.envelope()).encode())

        print(f"\n(a) POST /v1/events, {batch_size} envelopes per request", flush=True)
        batches, batch_stored, batch_drain = _phase("POST /v1/events (batches)", base_url, batch_request,
                                                    seconds=seconds, warmup=warmup, concurrency=batch_clients,
                                                    client=client, lethe=lethe, database_url=database_url)
        print(batches.summary(), flush=True)

        print("\n(c) POST /v1/events, one envelope per request", flush=True)
        singles, single_stored, single_drain = _phase("POST /v1/events (single)", base_url, single_request,
                                                      seconds=seconds, warmup=warmup, concurrency=single_clients,
                                                      client=client, lethe=lethe, database_url=database_url)
        print(singles.summary(), flush=True)

        server_alive = lethe.alive()
        _wait_empty(database_url)
        receipts, dead_letters = _stored(database_url)
        backlog = _backlog(database_url)
        errors = lethe.logged_errors()
        lethe.stop()
        clickhouse_rows = _count_clickhouse_rows(str(lethe.cwd / "var" / "clickhouse"))

    batch_eps = batches.statuses.get(202, 0) * batch_size / batches.seconds if batches.seconds else 0.0
    single_eps = singles.statuses.get(202, 0) / singles.seconds if singles.seconds else 0.0
    ratio = batch_eps / direct_rate if direct_rate else float("nan")
    print("\nchecks:")
    print(f"  stored events   (a) {batch_stored:,} receipts for {batches.statuses.get(202, 0) * batch_size:,} "
          f"accepted; (c) {single_stored:,} for {singles.statuses.get(202, 0):,}")
    print(f"  totals          {receipts:,} receipts in PostgreSQL, {clickhouse_rows:,} rows in the server's chDB, "
          f"{backlog:,} events left in the outbox, {dead_letters} dead letters (warm-ups included)")
    if errors:
        print(f"  server logged {len(errors)} error line(s); first: {errors[0][:300]}")
    if not server_alive:
        print(f"  the server ended during the run (exit status {lethe.exit_status})")

    ratio_ok, single_ok = ratio >= TARGET_RATIO, single_eps >= TARGET_SINGLE_EPS
    print("\nresult:")
    crypto_ratio = rates[VARIANTS[0]] / rates[VARIANTS[-1]] if rates[VARIANTS[-1]] else float("nan")
    crypto_ok = crypto_ratio >= TARGET_CRYPTO
    print(f"  (b) direct chDB insert        {direct_rate:10,.0f} rows/s   (rows already encrypted, raw insert)")
    print(f"  (d) in process, with encryption    {rates[VARIANTS[0]]:10,.0f} events/s")
    print(f"  (d) in process, keys, no AES       {rates[VARIANTS[1]]:10,.0f} events/s")
    print(f"  (d) in process, without encryption {rates[VARIANTS[2]]:10,.0f} events/s   "
          f"with / without = {crypto_ratio:.1%}")
    print(f"  (a) POST /v1/events batches   {batch_eps:10,.0f} events/s   ({batches.throughput:.2f} requests/s, "
          f"p50 {batches.percentile_ms(50):.0f} ms, p99 {batches.percentile_ms(99):.0f} ms, errors {batches.errors})")
    print(f"  (c) POST /v1/events single    {single_eps:10,.0f} events/s   p50 {singles.percentile_ms(50):.1f} ms, "
          f"p99 {singles.percentile_ms(99):.1f} ms, errors {singles.errors}")
    for label, drain, acked in (("(a)", batch_drain, batch_eps), ("(c)", single_drain, single_eps)):
        print(f"  (e) drain during {label}          {drain['rate']:10,.0f} events/s   into ClickHouse, for "
              f"{acked:,.0f}/s acknowledged; backlog at the end {drain['backlog']:,.0f} events, empty "
              f"{drain['empty_after']:.1f} s later")
    # keeping up: during each phase the drain moved at least 90 % of what was acknowledged, and the
    # backlog left at its end was gone within 10 s
    keeps_up = all(d["moved"] >= 0.9 * stored and d["empty_after"] < 10
                   for d, stored in ((batch_drain, batch_stored), (single_drain, single_stored)))
    print(f"  target (a) >= {TARGET_RATIO:.0%} of direct:       {_verdict(ratio_ok)} ({ratio:.1%})")
    print(f"  target (c) >= {TARGET_SINGLE_EPS:,.0f} events/s:     {_verdict(single_ok)} ({single_eps:,.0f})")
    print(f"  target (d) with >= {TARGET_CRYPTO:.0%} of without: {_verdict(crypto_ok)} ({crypto_ratio:.1%})")
    print(f"  target (e) the drain keeps up:  {_verdict(keeps_up)} (moved >= 90 % of what each phase acknowledged, "
          "backlog gone within 10 s)")

    consistent = receipts == clickhouse_rows and dead_letters == 0 and backlog == 0
    if not consistent:
        print(f"  INCONSISTENT: receipts, ClickHouse rows, the outbox ({backlog} left) and dead letters do not agree")
    broken = (batches.errors > 0 or singles.errors > 0 or not server_alive or batches.timed_out
              or singles.timed_out or not consistent)
    if broken:
        return 1
    if strict and not (ratio_ok and single_ok and crypto_ok and keeps_up):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
