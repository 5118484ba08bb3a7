"""Benchmark: erasure by key destruction, against a full copy of the events table.

Since 7d9d04d every personal value of an event is stored in ClickHouse only as AES-256-GCM
ciphertext under its actor's analytics data key (SQL table `data_keys`); the anonymise job
destroys that key in the SQL transaction that records the step (KeysStep "analytics"), and reads
ClickHouse only to count, for the evidence, the rows it made unreadable. So what is timed here is
key destruction and the job around it, not a rewrite of ClickHouse.

In-process, no server: an SQL database (SQLite file by default; BENCH_ERASURE_DB=postgresql for a
throw-away PostgreSQL database), a fresh embedded chDB directory, one project, and a `Container`
built as tests/conftest.py builds it (real services, real clock).

Data (generated, then checked):
- SQL: BENCH_SUBJECTS subjects (ids = the same deterministic UUIDs the generator puts in
  ClickHouse, user ids `user_<n>`), each with a REAL analytics key made by
  `KeyService.ciphers(create=True)` (random 32-byte key, wrapped under the KEK derived from the
  secret): the key table has its real size.
- ClickHouse: BENCH_EVENTS events over BENCH_DAYS daily partitions (`INSERT ... SELECT FROM
  numbers(N)`, see bench.chdata). For a SAMPLE of subjects (BENCH_SAMPLE erased ones and as
  many bystanders) the personal values are REAL ciphertext, made by `Cipher.encrypt` under the
  subject's key, bound to its column (aad), exactly what IngestService stores; these are the
  rows read back at the end. For every other row the personal values are FILLER: ciphertext-shaped
  tokens made by ClickHouse ('v1.' + url-safe base64 of random bytes of the real length), so rows
  have their real size and entropy on disk, but no key opens them. The policy's `store_ip` is
  honoured (false by default: no IP stored at all).
  The data is inserted in two parts, so the key destruction is timed on the same database at
  1/10 of the events and at all of them: a tenth of every day's events first, then the rest.
  Then, with BENCH_OPTIMIZE=1, `OPTIMIZE FINAL` (one part per partition; 47 s at 10M on a
  busy 2-core machine, so off by default: background merges get up to 60 s instead).
- SQL tables that ingest would also fill (messages, profiles, receipts) stay empty.

Timed, in this order (CPU of this process and of the rest of the machine printed for each):
1. at 1/10 of the events: a full-table copy, then (b) for 10,000 subjects (set B1);
2. at all the events: a full-table copy (`CREATE TABLE events_copy AS events; INSERT INTO
   events_copy SELECT *`);
   (b) "the step a request waits for": `KeysStep("analytics").anonymise` for BENCH_ERASE other
   subjects (set B2) inside a unit of work, plus its commit: their keys are destroyed (what
   makes their personal event values unreadable);
   (c) "the whole anonymise job": BENCH_ERASE deletion requests (set A, mode grace) created
   through `DeletionService.request_async` (not timed), then `ErasureService.anonymise(now)`:
   lease, holds, the ClickHouse evidence count, the SQL steps (key destruction included),
   transitions, evidence and audit;
   `KeyService.compact` after it (information: SQLite checkpoint / PostgreSQL VACUUM FULL).
Targets (issue 7): (b) <= 0.01 x the copy of all events, flat from 1/10 to all; (c) <= 0.2 x.

Then it checks by reading: every request of set A is `in_grace`; no subject of A, B1 or B2 has
an analytics key left (`KeyService.ciphers(create=False)` returns nothing for them); the erased
sample's rows are still there, still ciphertext, and no key opens them; the bystanders' sample
values decrypt to the original plaintext; rows, distinct subjects and rows with a personal value
are unchanged, and no plaintext personal value exists.

Settings (environment): BENCH_EVENTS (10000000), BENCH_SUBJECTS (200000), BENCH_ERASE (10000),
BENCH_DAYS (425), BENCH_SAMPLE (200), BENCH_ERASURE_DB (sqlite | postgresql), BENCH_OPTIMIZE, BENCH_PG_URL,
BENCH_STRICT=1. About 2-3 minutes at the default size on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import chdata
from bench.chdata import SUBJECT_UUID, TimedClickHouse, mib, verdict, wait_for_merges
from bench.harness import REPO, cpu_seconds, env_int, exit_on_sigterm, machine_cpu_seconds, postgres_database

TARGET_STEP = 0.01  # (b): keys destroyed, x the copy
TARGET_JOB = 0.2  # (c): the whole anonymise job, x the copy
PROJECT = "bench-prod"
SECRET = b"bench"
KEY_BATCH = 10_000  # keys created per transaction
SMALL = 10  # the first part is 1/SMALL of the events


def generate_sql(events: int, subjects: int, start: datetime, days: int, *, store_ip: bool,
                 seal: Callable[[str], str] | None, where: str, table: str = "events") -> str:
    """4 message_sent (text, unique message_id), 8 other frontend events (name, nickname, platform
    user id, source URL, user agent), 5 backend events, 1 user_login (ip, if the policy stores
    IPs), 1 name_changed, 1 without a subject (text_translate), in one project."""
    return chdata.generate_sql(
        events, subjects, start, days * 86_400_000, project_sql=f"'{PROJECT}'",
        event_sql="multiIf(k < 4, 'message_sent', k < 8, 'session_started', k < 10, 'room_opened', "
                  "k < 12, 'message_liked', k < 14, 'user_join', k < 16, 'user_leave', k < 17, 'reaction_create', "
                  "k < 18, 'user_login', k < 19, 'name_changed', 'text_translate')",
        user_name_when="k < 12 OR k = 18", ip_when="k = 17" if store_ip else "0", seal=seal, where=where,
        table=table)


class Meter:
    """Wall time and who used the CPU meanwhile: this process (chDB's threads included) and the
    rest of the machine (other processes: numbers taken while it is high are not comparable)."""

    def __enter__(self) -> Meter:
        self._wall, self._own, self._machine = time.perf_counter(), cpu_seconds(), machine_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.own = cpu_seconds() - self._own
        self.other = max(0.0, machine_cpu_seconds() - self._machine - self.own)

    def note(self) -> str:
        seconds = max(self.seconds, 1e-9)
        return (f"CPU: this process {self.own / seconds:.0%} of a core, "
                f"rest of the machine {self.other / seconds:.0%}")


@contextlib.contextmanager
def _database(kind: str, tmp: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/lethe.db"
    elif kind in {"postgresql", "postgres", "pg"}:
        with postgres_database("lethe_bench_erasure") as url:
            yield url
    else:
        raise SystemExit(f"BENCH_ERASURE_DB must be sqlite or postgresql, got {kind!r}")


def _table_state(ch: Any) -> dict[str, int]:
    from app.stores.clickhouse.events import _ANY_PERSONAL, _PLAINTEXT

    rows, subjects, personal, plaintext = ch.rows(
        f"SELECT count(), uniqExact(subject_id), countIf({_ANY_PERSONAL}), countIf({_PLAINTEXT}) FROM events")[0]
    parts, partitions, disk = ch.rows(
        "SELECT count(), uniqExact(partition_id), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = currentDatabase() AND table = 'events' AND active")[0]
    return {"rows": int(rows), "subjects": int(subjects), "personal": int(personal), "plaintext": int(plaintext),
            "parts": int(parts), "partitions": int(partitions), "bytes": int(disk)}


def _copy(ch: Any) -> float:
    ch.command("DROP TABLE IF EXISTS events_copy SYNC")
    started = time.perf_counter()
    ch.command("CREATE TABLE events_copy AS events")
    # The copy's insert blocks mix partitions (the default limit of 100 per block is for
    # ingestion, not for a bulk rewrite).
    ch.command("INSERT INTO events_copy SELECT * FROM events", settings={"max_partitions_per_insert_block": 0})
    seconds = time.perf_counter() - started
    ch.command("DROP TABLE events_copy SYNC")
    return seconds


def _subject_ids(ch: Any, numbers: Sequence[int]) -> dict[int, str]:
    """Subject number -> the subject id the generator gives it."""
    return {int(n): str(s) for n, s in ch.rows(
        f"SELECT n, toString({SUBJECT_UUID}) FROM (SELECT arrayJoin({{ns:Array(UInt32)}}) AS n)",
        parameters={"ns": list(numbers)})}


def _make_subjects(container: Any, project_id: str, ids: Mapping[int, str], now: datetime) -> float:
    """The SQL subjects, in bulk (ids chosen so that they match the generated events), as
    app.services.identities makes them: found by a keyed hash, the user id sealed under each
    subject's grace key (a real key per subject through the app's keyring)."""
    from sqlalchemy import insert

    from app.models import Subject
    from app.services.identities import USER_ID_AAD
    from app.services.keys import GRACE

    started = time.perf_counter()
    items = list(ids.items())
    for i in range(0, len(items), KEY_BATCH):
        chunk = items[i:i + KEY_BATCH]
        with container.uow() as uow:
            ciphers = container.keys.ciphers(uow, [sid for _, sid in chunk], GRACE, create=True)
            rows = [{"id": sid, "project_id": project_id, "status": "active", "created_at": now, "last_seen_at": now,
                     "user_key": container.identities.lookup(project_id, f"user_{n}"),
                     "user_id": ciphers[sid].encrypt(f"user_{n}", USER_ID_AAD.encode())} for n, sid in chunk]
            uow.session.execute(insert(Subject.__table__), rows)  # type: ignore[arg-type]
            uow.commit()
    container.keys.forget()
    return time.perf_counter() - started


def _make_keys(container: Any, owners: Sequence[str]) -> float:
    """A real analytics key per subject through the app's keyring, KEY_BATCH per transaction."""
    from app.services.keys import ANALYTICS

    started = time.perf_counter()
    for i in range(0, len(owners), KEY_BATCH):
        with container.uow() as uow:
            container.keys.ciphers(uow, owners[i:i + KEY_BATCH], ANALYTICS, create=True)
            uow.commit()
    container.keys.forget()
    return time.perf_counter() - started


def _ciphers(container: Any, owners: Sequence[str]) -> dict[str, Any]:
    from app.services.keys import ANALYTICS

    container.keys.forget()  # read from the table, not from this process's cache
    with container.uow() as uow:
        return dict(container.keys.ciphers(uow, owners, ANALYTICS, create=False))


def _insert_sample(container: Any, ch: Any, generate: Callable[[str, str], str], sample: Mapping[int, str],
                   where: str) -> dict[str, dict[str, str]]:
    """The sample subjects' rows with REAL ciphertext: generated as plaintext into a scratch
    table, encrypted here under each subject's key (as IngestService._sealed does), inserted into
    events. Returns dedup_key -> {column: plaintext} of what was sealed."""
    from app.domain.crypto import Cipher, new_data_key
    from app.domain.events import SEALED_COLUMNS
    from app.stores.clickhouse.events import COLUMNS

    ch.command("DROP TABLE IF EXISTS sample_plain SYNC")
    ch.command("CREATE TABLE sample_plain AS events")
    ch.command(generate(f"({where}) AND n IN ({', '.join(map(str, sample))})", "sample_plain"),
               settings={"max_partitions_per_insert_block": 0})
    rows = ch.rows(f"SELECT {', '.join(COLUMNS)} FROM sample_plain")
    ch.command("DROP TABLE sample_plain SYNC")
    ciphers = _ciphers(container, list(sample.values()))
    first, index = COLUMNS.index(next(iter(SEALED_COLUMNS))), COLUMNS.index("dedup_key")
    sealed_rows, plain = [], {}
    for row in rows:
        values = list(row)
        subject = str(values[COLUMNS.index("subject_id")])
        originals = {}
        cipher = ciphers.get(subject)
        for offset, column in enumerate(SEALED_COLUMNS):
            value = values[first + offset]
            if value and cipher is None:  # a row without an actor: its `extra`, under a key no one has
                values[first + offset] = Cipher(new_data_key()).encrypt(value, column.encode())
            elif value:
                originals[column] = value
                values[first + offset] = cipher.encrypt(value, column.encode())
        plain[str(values[index])] = originals
        sealed_rows.append(values)
    for i in range(0, len(sealed_rows), 50_000):
        ch.insert("events", sealed_rows[i:i + 50_000], COLUMNS, settings={"max_partitions_per_insert_block": 0})
    return plain


def _batch(project_id: str, subjects: Mapping[int, str]) -> Any:
    from app.ports import ErasureBatch

    return ErasureBatch(project_of=dict.fromkeys(subjects.values(), project_id),
                        user_of={sid: f"user_{n}" for n, sid in subjects.items()})


def _destroy_keys(container: Any, project_id: str, subjects: Mapping[int, str]) -> tuple[Meter, int]:
    """(b): KeysStep("analytics").anonymise in a unit of work, and its commit."""
    from app.stores.sql.erasure_steps import KeysStep

    step = KeysStep(container.keys, "analytics", at_anonymise=True)
    batch = _batch(project_id, subjects)
    with Meter() as meter, container.uow() as uow:
        counts = step.anonymise(uow, batch)
        uow.commit()
    return meter, sum(counts.values())


def _request_all(container: Any, project_id: str, subjects: Mapping[int, str]) -> tuple[float, list[str]]:
    """Deletion requests (grace) through DeletionService, concurrently, so its group commit batches them."""
    from app.domain.requests import Mode

    async def send() -> list[Any]:
        return await asyncio.gather(*(container.deletions.request_async(
            project_id, f"user_{n}", Mode.GRACE, None, actor="partner:bench") for n in subjects))

    started = time.perf_counter()
    outcomes = asyncio.run(send())
    bad = [o.body for o in outcomes if not o.created]
    if bad:
        raise RuntimeError(f"{len(bad)} deletion requests found one already open (first: {bad[0]})")
    return time.perf_counter() - started, [o.body.id for o in outcomes]


def _read_back(container: Any, ch: Any, ids: Sequence[str], plain: Mapping[str, Mapping[str, str]]
               ) -> tuple[int, int, int, int, int]:
    """(rows, values, values sealed by this bench (real ciphertext), values that decrypt to the
    original, subjects with a key) for these subjects' rows."""
    from app.domain.crypto import TOKEN_PREFIX, Undecryptable
    from app.domain.events import SEALED_COLUMNS

    ciphers = _ciphers(container, ids)
    rows = ch.rows(f"SELECT toString(subject_id), dedup_key, {', '.join(SEALED_COLUMNS)} FROM events "
                   "WHERE subject_id IN {ids:Array(UUID)}", parameters={"ids": [uuid.UUID(s) for s in ids]})
    values = real = opened = 0
    for subject, dedup_key, *tokens in rows:
        original = plain.get(str(dedup_key), {})
        for column, token in zip(SEALED_COLUMNS, tokens, strict=True):
            if not token:
                continue
            values += 1
            real += column in original
            if not token.startswith(TOKEN_PREFIX):
                raise RuntimeError(f"plaintext found in events.{column}")
            cipher = ciphers.get(subject)
            if cipher is None:
                continue
            with contextlib.suppress(Undecryptable):
                if cipher.decrypt(token, column.encode()) == original.get(column):
                    opened += 1
    return len(rows), values, real, opened, len(ciphers)


def main() -> int:
    events = env_int("BENCH_EVENTS", 10_000_000)
    subjects = env_int("BENCH_SUBJECTS", 200_000)
    erase = min(subjects // 5, env_int("BENCH_ERASE", 10_000))
    days = env_int("BENCH_DAYS", 425)
    sample_size = min(erase, env_int("BENCH_SAMPLE", 200))
    db_kind = os.environ.get("BENCH_ERASURE_DB", "sqlite").strip().lower() or "sqlite"
    optimize = os.environ.get("BENCH_OPTIMIZE", "").strip() in {"1", "true", "yes"}
    strict = os.environ.get("BENCH_STRICT", "").strip() in {"1", "true", "yes"}
    exit_on_sigterm()

    from app.bootstrap import Container
    from app.config import Settings
    from app.services.policies import PolicyBook
    from app.stores.clickhouse.client import ClickHouse
    from app.stores.clickhouse.schema import migrate
    from app.stores.sql import migrations
    from app.stores.sql.engine import make_engine

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    start = end - timedelta(days=days)
    policies = PolicyBook.load(REPO / "policies")
    store_ip = policies.for_project(PROJECT).store_ip
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"data:    {events:,} events over {days} days ({start:%Y-%m-%d} .. {end:%Y-%m-%d}, daily partitions) "
          f"for {subjects:,} subjects, each with a real analytics key in SQL ({db_kind}); erased: 3 disjoint "
          f"sets of {erase:,} subjects; policy store_ip={str(store_ip).lower()}")
    print(f"         personal values: REAL AES-256-GCM ciphertext (Cipher.encrypt under the subject's key) for "
          f"{sample_size} erased + {sample_size} bystander subjects (the rows read back); FILLER for all other "
          "rows: ciphertext-shaped random tokens of the real length made by ClickHouse (no key opens them)")
    print(f"targets: (b) keys destroyed <= {TARGET_STEP:g} x a full-table copy, flat from {events // SMALL:,} to "
          f"{events:,} events; (c) whole anonymise job <= {TARGET_JOB:g} x the copy")
    sys.stdout.flush()

    rng = random.Random(20240907)
    numbers = rng.sample(range(subjects), subjects)  # a random order of all subject numbers
    set_a, set_b1, set_b2 = (numbers[i * erase:(i + 1) * erase] for i in range(3))
    bystanders = numbers[3 * erase:3 * erase + sample_size]
    erased_sample = set_a[:sample_size]

    with tempfile.TemporaryDirectory(prefix="lethe-bench-erasure-") as tmp, _database(db_kind, tmp) as db_url:
        ch = ClickHouse(f"chdb://{tmp}/clickhouse")
        engine = make_engine(db_url)
        settings = Settings(database_url=db_url, clickhouse_url="chdb://unused", policy_dir=REPO / "policies",
                            secret_key=SECRET, scheduler=False)
        container = Container(settings=settings, engine=engine, policies=policies, clickhouse=ch)
        try:
            version = ch.rows("SELECT version()")[0][0]
            print(f"engine:  chDB {version} (embedded); SQL {engine.dialect.name}", flush=True)
            migrate(ch)
            migrations.upgrade(engine)
            container.accounts.create_project(PROJECT)
            with container.uow() as uow:
                project = uow.projects.by_name(PROJECT)
                assert project is not None
                project_id = project.id
            ids = _subject_ids(ch, range(subjects))
            took_subjects = _make_subjects(container, project_id, ids, datetime.now(UTC))
            took_keys = _make_keys(container, [ids[n] for n in numbers])
            print(f"\nsetup:   {subjects:,} SQL subjects in {took_subjects:.1f} s; {subjects:,} analytics keys through "
                  f"KeyService.ciphers(create=True) in {took_keys:.1f} s", flush=True)

            sample = {n: ids[n] for n in [*erased_sample, *bystanders]}
            exclude = f"n NOT IN ({', '.join(map(str, sample))})"

            def generate(where: str, table: str = "events", seal: Callable[[str], str] | None = None) -> str:
                return generate_sql(events, subjects, start, days, store_ip=store_ip, seal=seal, where=where,
                                    table=table)

            plain: dict[str, dict[str, str]] = {}
            lines: list[str] = []
            results: dict[str, float] = {}
            # a tenth of every day's events, of every kind (a hash, not `number`, picks it), then the rest
            tenth = f"cityHash64(number, 11) % {SMALL} = 0"
            for label, part in ((f"1/{SMALL}", tenth), ("all", f"NOT ({tenth})")):
                with Meter() as gen:
                    ch.command(generate(f"({part}) AND {exclude}", seal=chdata.filler_token),
                               settings={"max_partitions_per_insert_block": 0})
                    plain.update(_insert_sample(container, ch, lambda w, t: generate(w, t), sample, part))
                optimized = 0.0
                if label == "all" and optimize:
                    optimized, _ = _timed(lambda: ch.command("OPTIMIZE TABLE events FINAL",
                                                             settings={"alter_sync": 2}))
                waited = wait_for_merges(ch, limit=60)
                state = _table_state(ch)
                print(f"\n{label} of the events: {state['rows']:,} rows ({len(plain):,} of them real ciphertext), "
                      f"{state['subjects']:,} distinct subject ids (incl. the empty one), {state['personal']:,} rows "
                      f"with a personal value, {state['plaintext']} with a plaintext one; {state['parts']} parts in "
                      f"{state['partitions']} partitions, {mib(state['bytes'])} on disk; generated in "
                      f"{gen.seconds:.1f} s" + (f", OPTIMIZE FINAL {optimized:.1f} s" if optimized else "")
                      + f", then {waited:.1f} s waiting for background merges",
                      flush=True)
                with Meter() as meter:
                    copy = _copy(ch)
                results[f"copy {label}"] = copy
                print(f"  copy:      {copy:8.3f} s  CREATE TABLE events_copy AS events; INSERT ... SELECT * "
                      f"({state['rows'] / copy:,.0f} rows/s; {meter.note()})", flush=True)
                wait_for_merges(ch)
                destroy_set = set_b1 if label != "all" else set_b2
                meter, destroyed = _destroy_keys(container, project_id, {n: ids[n] for n in destroy_set})
                results[f"step {label}"] = meter.seconds
                line = (f"anonymise (b) keys destroyed, {len(destroy_set):,} subjects, {state['rows']:,} events: "
                        f"{meter.seconds:.3f} s ({destroyed:,} keys; {meter.note()})   "
                        f"ratio {meter.seconds / copy:.4f} x the copy")
                lines.append(line)
                print(f"  {line}", flush=True)
            before = state

            took_requests, request_ids = _request_all(container, project_id, {n: ids[n] for n in set_a})
            print(f"\n  {len(request_ids):,} deletion requests (grace) created through DeletionService in "
                  f"{took_requests:.1f} s (not timed)", flush=True)
            timed = TimedClickHouse(ch)
            container.events.ch = timed  # the job's ClickHouse statements, timed one by one
            with Meter() as job_meter:
                summary = container.erasure.anonymise(container.now())
            container.events.ch = ch
            copy = results["copy all"]
            job_line = (f"anonymise (c) whole job, {summary.processed:,} requests, {before['rows']:,} events: "
                        f"{job_meter.seconds:.3f} s ({job_meter.note()})   "
                        f"ratio {job_meter.seconds / copy:.4f} x the copy")
            print(f"  {job_line}", flush=True)
            print(f"     summary: processed {summary.processed}, failed {summary.failed}, held {summary.held}; "
                  f"evidence per store {summary.stores}", flush=True)
            ch_seconds = sum(t for _, t in timed.calls)
            for statement, seconds in timed.calls:
                print(f"     ClickHouse {seconds:7.3f} s  {statement[:160]}")
            print(f"     the rest (SQL: lease, holds, steps incl. the keys, transitions, evidence, audit; Python): "
                  f"{job_meter.seconds - ch_seconds:.3f} s", flush=True)
            compacted, _ = _timed(lambda: container.keys.compaction.compact())
            print(f"  KeyService.compact after the job (information): {compacted:.3f} s", flush=True)

            # --- checks by reading -----------------------------------------------------
            after = _table_state(ch)
            statuses = _statuses(container, request_ids)
            erased_ids = [ids[n] for n in [*set_a, *set_b1, *set_b2]]
            keys_left = len(_ciphers(container, erased_ids))
            e_rows, e_values, e_real, e_opened, e_keys = _read_back(container, ch, [ids[n] for n in erased_sample],
                                                                   plain)
            b_rows, b_values, b_real, b_opened, b_keys = _read_back(container, ch, [ids[n] for n in bystanders],
                                                                   plain)
        finally:
            container.close()

    checks = [
        (f"requests in_grace: {statuses}", statuses == {"in_grace": len(request_ids)}),
        (f"analytics keys left for the {len(erased_ids):,} erased subjects: {keys_left}", keys_left == 0),
        (f"erased sample ({sample_size} subjects): {e_rows:,} rows still there with {e_values:,} ciphertext values "
         f"({e_real:,} real); keys found {e_keys}, values that decrypt {e_opened}",
         e_rows > 0 and e_real == e_values > 0 and e_keys == 0 and e_opened == 0),
        (f"bystander sample ({sample_size} subjects): {b_rows:,} rows, {b_values:,} values; keys found {b_keys}, "
         f"values that decrypt to the original {b_opened:,} ({b_real:,} real)",
         b_keys == sample_size and b_values > 0 and b_opened == b_values == b_real),
        (f"rows {before['rows']:,} -> {after['rows']:,}; distinct subjects {before['subjects']:,} -> "
         f"{after['subjects']:,}; rows with a personal value {before['personal']:,} -> {after['personal']:,}; "
         f"plaintext values {after['plaintext']}",
         (before["rows"], before["subjects"], before["personal"]) == (after["rows"], after["subjects"],
                                                                        after["personal"]) and after["plaintext"] == 0),
    ]
    print("\nchecks (by reading):")
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    consistent = all(ok for _, ok in checks) and summary.failed == 0

    copy = results["copy all"]
    step_ratio = results["step all"] / copy
    job_ratio = job_meter.seconds / copy
    flat = results["step all"] / results[f"step 1/{SMALL}"] if results[f"step 1/{SMALL}"] else float("nan")
    step_ok, job_ok = step_ratio <= TARGET_STEP, job_ratio <= TARGET_JOB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\nresult:")
    print(f"  full-table copy, {events // SMALL:,} events      {results[f'copy 1/{SMALL}']:8.3f} s")
    print(f"  full-table copy, {events:,} events     {copy:8.3f} s")
    for line in lines:
        print(f"  {line}")
    print(f"  {job_line}")
    print(f"  (b) at all / at 1/{SMALL} of the events: {flat:.2f} (flat: the key table is the same size; "
          "ClickHouse is not touched)")
    print(f"  target (b) <= {TARGET_STEP:g} x copy: {verdict(step_ok)} ({step_ratio:.4f} x)")
    print(f"  target (c) <= {TARGET_JOB:g} x copy: {verdict(job_ok)} ({job_ratio:.4f} x)")
    print(f"  peak RSS of this process: {peak:,.0f} MiB")
    if not consistent:
        return 1
    if strict and not (step_ok and job_ok):
        return 1
    return 0


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _statuses(container: Any, request_ids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with container.uow() as uow:
        for row in uow.requests.by_ids(request_ids):
            counts[row.status] = counts.get(row.status, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
