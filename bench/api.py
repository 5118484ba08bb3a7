"""Benchmark: the partner API's write path, POST /v1/deletion-requests, on PostgreSQL.

Starts a real `lethe serve` (scheduler on, as in production-like single-process use) on a fresh
PostgreSQL database and a temporary working directory, creates a project, then:

1. anchor: GET /healthz (no auth, no database) with the same client and connections, to show
   what the server process itself can answer on this machine;
2. POST /v1/deletion-requests `{"user_id": <unique>, "mode": "grace"}` with the project's api_key.

Both run against a copy of policies/ written into the temporary directory with every `[limits]`
rate raised to UNLIMITED requests/s: the default 100/s per partner key would turn this
measurement of the write path into a measurement of the rate limiter (mostly 429s). The limiter
itself still runs (it counts every request), as in production.

Target (issue): >= 1,000 requests/s with p99 <= 50 ms on this 2-core machine, with whichever
number of API processes is best: phase 2 runs once per count in BENCH_WORKERS (default "1,2",
`lethe serve --workers N`; the server is restarted for each), and the best count is reported.

3. overload (issue 11): the server is restarted on the repo's policies/ as they are (partner key:
   100 requests/s), and one partner key of a second project sends POST /v1/deletion-requests with
   unique user ids from BENCH_OVERLOAD_CONCURRENCY (200) connections for BENCH_OVERLOAD_SECONDS
   (20). Targets: accepted requests' p99 <= 100 ms, 429s answered quickly (p99 <= 100 ms), every
   429 with Retry-After, no acknowledged request lost (rows in deletion_requests for the project
   == 202 answers, warm-up included, counted right after the load), zero 5xx.

Settings (environment): BENCH_SECONDS (30), BENCH_WORKERS (1,2), BENCH_ANCHOR_SECONDS (10), BENCH_WARMUP_SECONDS (2,
not counted), BENCH_CONCURRENCY (32 connections), BENCH_OVERLOAD_SECONDS (20),
BENCH_OVERLOAD_CONCURRENCY (200), BENCH_CLIENT (raw | httpx), BENCH_PG_URL
(admin URL, default postgresql://postgres@127.0.0.1:5432/postgres), BENCH_STRICT=1 (a MISS
fails the run). Only loopback traffic; every loop is bounded by time; the server is stopped
and the database dropped at the end, also on error.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import secrets
import sys
import time
from collections import Counter

from bench.harness import (
    REPO,
    LetheProcess,
    PhaseResult,
    Request,
    env_client,
    env_float,
    env_int,
    exit_on_sigterm,
    policies_with_limits,
    postgres_database,
    query_database,
    run_load,
)

TARGET_RPS = 1000.0
TARGET_P99_MS = 50.0
UNLIMITED = 1_000_000  # requests/s per credential in the throughput phases' policies
OVERLOAD_TARGET_ACCEPTED_P99_MS = 100.0
OVERLOAD_TARGET_REFUSED_P99_MS = 100.0
OVERLOAD_PROJECT = "bench-overload"
DRAIN_SECONDS = 30.0  # how long to wait, after the load, for the anonymise job to empty `pending`


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _error_kind(line: str) -> tuple[str, str]:
    """(event, last line of the traceback) of a structlog JSON error line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "unparsed", line[:200]
    last = (entry.get("exception") or "").strip().rsplit("\n", 1)[-1]
    return str(entry.get("event", "?")), last[:200] or "-"


def _client_label(client: str) -> str:
    if client == "raw":
        return "raw asyncio HTTP/1.1 keep-alive streams (one process, one event loop)"
    return "httpx.AsyncClient, HTTP/1.1 keep-alive (one process, one event loop)"


def _wait_for_anonymise(database_url: str) -> tuple[dict[str, int], float]:
    """Status counts once nothing is `pending` (or after DRAIN_SECONDS) and how long that took."""
    started = time.monotonic()
    while True:
        rows = query_database(database_url, "SELECT status, count(*) FROM deletion_requests GROUP BY status")
        counts = {str(status): int(n) for status, n in rows}
        waited = time.monotonic() - started
        if not counts.get("pending") or waited >= DRAIN_SECONDS:
            return counts, waited
        time.sleep(0.5)


def main() -> int:
    seconds = env_float("BENCH_SECONDS", 30)
    anchor_seconds = env_float("BENCH_ANCHOR_SECONDS", 10)
    warmup = env_float("BENCH_WARMUP_SECONDS", 2, allow_zero=True)
    concurrency = env_int("BENCH_CONCURRENCY", 32)
    overload_seconds = env_float("BENCH_OVERLOAD_SECONDS", 20)
    overload_concurrency = env_int("BENCH_OVERLOAD_CONCURRENCY", 200)
    client = env_client("raw")
    strict = os.environ.get("BENCH_STRICT", "").strip() in {"1", "true", "yes"}
    worker_counts = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2").split(",") if n.strip()]
    exit_on_sigterm()

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}; "
          f"load average {_load_average()}")
    print(f"client:  {_client_label(client)}; {concurrency} connections; warm-up {warmup:g} s")
    print(f"phases:  GET /healthz {anchor_seconds:g} s, POST /v1/deletion-requests {seconds:g} s, "
          f"then overload: POST /v1/deletion-requests {overload_seconds:g} s with {overload_concurrency} connections")
    print(f"target:  >= {TARGET_RPS:,.0f} requests/s with p99 <= {TARGET_P99_MS:g} ms on this 2-core machine")
    sys.stdout.flush()

    with postgres_database() as database_url, LetheProcess(database_url, scheduler=True) as lethe:
        unlimited = policies_with_limits(lethe.cwd / "policies-unlimited", UNLIMITED)
        lethe.use_policies(unlimited)
        keys = lethe.run_json("project", "create", "bench")
        base_url = lethe.serve()
        database = database_url.rsplit("/", 1)[1]
        print(f"server:  lethe serve on {base_url} (PostgreSQL database {database}, "
              "LETHE_SCHEDULER=on, chDB in a temporary directory)")
        print(f"policies: {unlimited}: a copy of {REPO / 'policies'} with every [limits] rate raised to "
              f"{UNLIMITED:,} requests/s per credential, so the rate limit does not shape these two phases "
              "(the limiter still counts every request)\n", flush=True)

        healthz = Request("GET", "/healthz")
        anchor = run_load("GET /healthz (anchor)", base_url, lambda: healthz, seconds=anchor_seconds,
                          concurrency=concurrency, client=client, warmup=warmup, server_pid=lethe.pid,
                          database=database)
        print(anchor.summary(), "\n", flush=True)

        run_id = secrets.token_hex(4)
        numbers = itertools.count()
        headers = {"Authorization": f"Bearer {keys['api_key']}", "Content-Type": "application/json"}

        def deletion_request() -> Request:
            body = b'{"user_id":"bench-%s-%d","mode":"grace"}' % (run_id.encode(), next(numbers))
            return Request("POST", "/v1/deletion-requests", headers, body)

        runs: list[tuple[int, PhaseResult]] = []
        for workers in worker_counts:
            if workers != 1 or runs:
                lethe.stop()
                base_url = lethe.serve(workers=workers)
            label = f"POST /v1/deletion-requests ({workers} API process{'es' if workers > 1 else ''})"
            created = run_load(label, base_url, deletion_request, seconds=seconds, concurrency=concurrency,
                               client=client, warmup=warmup, server_pid=lethe.pid, database=database)
            print(created.summary(), flush=True)
            runs.append((workers, created))
        workers, created = max(runs, key=lambda run: run[1].throughput)
        print("\nby process count: " + "; ".join(
            f"{n}: {r.throughput:,.1f} requests/s, p99 {r.percentile_ms(99):.1f} ms" for n, r in runs)
            + f"; best: {workers}", flush=True)

        server_alive = lethe.alive()
        counts, waited = _wait_for_anonymise(database_url)
        logged_errors = lethe.logged_errors()
        if not server_alive:
            print(f"  the server ended during the load (exit status {lethe.exit_status}; negative: killed by "
                  f"that signal); the end of its log:\n{lethe.log_tail(15)}")
        lethe.stop()
        code = _report(anchor, created, counts, waited, server_alive, logged_errors, strict, workers)

        print(f"\n--- overload: {overload_concurrency} connections, one partner key, the repo's policies ---",
              flush=True)
        overload = _overload(lethe, database_url, database, seconds=overload_seconds,
                             concurrency=overload_concurrency, warmup=warmup, client=client, strict=strict)
    return max(code, overload)


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def _overload(lethe: LetheProcess, database_url: str, database: str, *, seconds: float, concurrency: int,
              warmup: float, client: str, strict: bool) -> int:
    """Phase 3: the repo's own [limits], far more demand than one partner key may send."""
    from app.services.policies import PolicyBook

    lethe.use_policies(REPO / "policies")
    limit = PolicyBook.load(lethe.policy_dir).limits.partner_requests_per_second
    keys = lethe.run_json("project", "create", OVERLOAD_PROJECT)
    base_url = lethe.serve()
    print(f"server:  lethe serve restarted on {base_url}, LETHE_POLICY_DIR={lethe.policy_dir} (no override: "
          f"partner_requests_per_second = {limit}); project {OVERLOAD_PROJECT}; load average {_load_average()}",
          flush=True)

    run_id = secrets.token_hex(4)
    numbers = itertools.count()
    headers = {"Authorization": f"Bearer {keys['api_key']}", "Content-Type": "application/json"}

    def deletion_request() -> Request:
        body = b'{"user_id":"overload-%s-%d","mode":"grace"}' % (run_id.encode(), next(numbers))
        return Request("POST", "/v1/deletion-requests", headers, body)

    name = "POST /v1/deletion-requests (overload)"
    warm = None
    if warmup > 0:  # done here, not by run_load, so that its 202 answers count in the loss check
        warm = run_load(f"{name} (warm-up)", base_url, deletion_request, seconds=warmup, concurrency=concurrency,
                        client=client)
    result = run_load(name, base_url, deletion_request, seconds=seconds, concurrency=concurrency, client=client,
                      server_pid=lethe.pid, database=database)
    # Every 202 counted below was received before this query: its row must be visible now.
    (stored,), = query_database(
        database_url, "SELECT count(*) FROM deletion_requests d JOIN projects p ON p.id = d.project_id "
                      f"WHERE p.name = '{OVERLOAD_PROJECT}'")
    server_alive = lethe.alive()
    if not server_alive:
        print(f"  the server ended during the load (exit status {lethe.exit_status}); the end of its log:\n"
              f"{lethe.log_tail(15)}")
    logged_errors = lethe.logged_errors()
    log_lines = len(lethe.log_lines())
    lethe.stop()
    return _report_overload(result, warm, int(stored), limit, server_alive, logged_errors, log_lines, strict)


def _report_overload(result: PhaseResult, warm: PhaseResult | None, stored: int, limit: int, server_alive: bool,
                     logged_errors: list[str], log_lines: int, strict: bool) -> int:
    statuses = result.statuses
    accepted = statuses.get(202, 0) + statuses.get(200, 0)
    refused = statuses.get(429, 0)
    others = {code: n for code, n in sorted(statuses.items()) if code not in {200, 202, 429}}
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    warm_202 = warm.statuses.get(202, 0) if warm else 0
    warm_5xx = sum(n for code, n in warm.statuses.items() if code >= 500) if warm else 0
    acknowledged = statuses.get(202, 0) + warm_202
    lost = max(0, acknowledged - stored)
    accepted_p99 = result.percentile_ms(99, (200, 202))
    refused_p99 = result.percentile_ms(99, (429,))
    missing_retry_after = result.retry_after.get(None, 0)
    retry_values = ", ".join(f"{value!r} x {n}" for value, n in result.retry_after.most_common() if value is not None)

    # The limiter counts in windows of one whole second of the server's clock (this machine's clock):
    # from the first request sent (warm-up included) to the last answer, it may admit limit x windows.
    first = warm if warm is not None else result
    windows = int(result.ended_at) - int(first.started_at) + 1
    admitted = accepted + (warm.statuses.get(202, 0) + warm.statuses.get(200, 0) if warm else 0)

    print(f"{result.name}: {result.answered} answered in {result.seconds:.1f} s with {result.concurrency} "
          f"connections ({result.client} client); {result.throughput:.1f} answers/s")
    print(f"  sent            {result.answered + result.transport_errors} requests "
          f"(no answer: {result.transport_errors}{'; phase timed out' if result.timed_out else ''})")
    print(f"  accepted        {accepted} (202 new: {statuses.get(202, 0)}, 200 already open: {statuses.get(200, 0)}); "
          f"{accepted / result.seconds if result.seconds else 0:.1f} accepted/s against a limit of {limit}/s")
    print(f"                  limiter: {admitted} admitted (warm-up included) in the {windows} one-second windows "
          f"from the first request to the last answer, at most {limit * windows} allowed "
          f"({admitted / windows:.1f} per window)")
    print(f"  refused 429     {refused}; {'every one' if refused and not missing_retry_after else 'NOT every one'} "
          f"with Retry-After (missing on {missing_retry_after}; values: {retry_values or 'none'})")
    if 429 in result.first_body:
        print(f"                  first 429 body: {result.first_body[429][:300].decode(errors='replace')}")
    print(f"  other statuses  {', '.join(f'{code}: {n}' for code, n in others.items()) or 'none'}")
    for code, body in sorted(result.first_body.items()):
        if code != 429:
            print(f"                  first {code} body: {body[:300].decode(errors='replace')}")
    print(f"  latency         accepted p50 {result.percentile_ms(50, (200, 202)):.1f} ms, p99 {accepted_p99:.1f} ms, "
          f"max {result.percentile_ms(100, (200, 202)):.1f} ms; 429 p50 {result.percentile_ms(50, (429,)):.1f} ms, "
          f"p99 {refused_p99:.1f} ms, max {result.percentile_ms(100, (429,)):.1f} ms")
    print(result.cpu_line())
    print(f"  stored          {stored} rows in deletion_requests for {OVERLOAD_PROJECT} right after the load; "
          f"202 answers {acknowledged} (warm-up {warm_202} + measured {statuses.get(202, 0)}); lost {lost}"
          + (f"; {stored - acknowledged} stored without a 202 seen" if stored > acknowledged else ""))
    if warm is not None:
        print(f"  warm-up         {warm.answered} answered: "
              + ", ".join(f"{code}: {n}" for code, n in sorted(warm.statuses.items())))
    print(f"  server log      {log_lines} lines" + (f", {len(logged_errors)} error line(s):" if logged_errors else ""))
    for (event, cause), n in Counter(map(_error_kind, logged_errors)).most_common(5):
        print(f"    {n} x {event}: {cause}")

    accepted_ok = accepted_p99 <= OVERLOAD_TARGET_ACCEPTED_P99_MS
    refused_ok = refused_p99 <= OVERLOAD_TARGET_REFUSED_P99_MS and refused > 0
    retry_ok = refused > 0 and missing_retry_after == 0
    lost_ok = lost == 0
    no_5xx = server_errors + warm_5xx == 0
    print()
    print("result (overload):")
    print(f"  POST /v1/deletion-requests under overload: {accepted / result.seconds if result.seconds else 0:.1f} "
          f"accepted/s (limit {limit}/s), {refused} x 429, accepted p99 {accepted_p99:.1f} ms, "
          f"429 p99 {refused_p99:.1f} ms")
    print(f"  target accepted p99 <= {OVERLOAD_TARGET_ACCEPTED_P99_MS:g} ms:        "
          f"{_verdict(accepted_ok)} ({accepted_p99:.1f} ms)")
    print(f"  target 429 quickly, p99 <= {OVERLOAD_TARGET_REFUSED_P99_MS:g} ms:    "
          f"{_verdict(refused_ok)} ({refused_p99:.1f} ms over {refused} answers)")
    print(f"  target every 429 with Retry-After:     {_verdict(retry_ok)} (missing on {missing_retry_after})")
    print(f"  target no acknowledged request lost:   {_verdict(lost_ok)} ({acknowledged} x 202, {stored} stored, "
          f"lost {lost})")
    print(f"  target zero 5xx:                       {_verdict(no_5xx)} ({server_errors + warm_5xx})")

    if not server_alive or result.timed_out or result.transport_errors or (warm and warm.transport_errors):
        return 1
    if strict and not (accepted_ok and refused_ok and retry_ok and lost_ok and no_5xx):
        return 1
    return 0


def _report(anchor: PhaseResult, created: PhaseResult, counts: dict[str, int], waited: float,
            server_alive: bool, logged_errors: list[str], strict: bool, workers: int) -> int:
    total = sum(counts.values())
    print(f"  answers         202 (new request): {created.statuses.get(202, 0)}, "
          f"200 (already open): {created.statuses.get(200, 0)}")
    print(f"  afterwards      {total} requests stored (warm-up included): "
          + ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
          + f"; {'anonymise drained pending in' if not counts.get('pending') else 'still pending after'} "
            f"{waited:.1f} s")
    if logged_errors:
        print(f"  server logged {len(logged_errors)} error line(s):")
        for (event, cause), n in Counter(map(_error_kind, logged_errors)).most_common(5):
            print(f"    {n} x {event}: {cause}")

    ratio = created.throughput / anchor.throughput if anchor.throughput else float("nan")
    p99 = created.percentile_ms(99)
    rps_ok, p99_ok = created.throughput >= TARGET_RPS, p99 <= TARGET_P99_MS
    print()
    print("result:")
    print(f"  API processes               {workers} (the best of {os.environ.get('BENCH_WORKERS', '1,2')})")
    print(f"  POST /v1/deletion-requests  {created.throughput:8.1f} requests/s   "
          f"p50 {created.percentile_ms(50):6.1f} ms   p99 {p99:6.1f} ms   errors {created.errors}")
    print(f"  GET /healthz (anchor)       {anchor.throughput:8.1f} requests/s   "
          f"p50 {anchor.percentile_ms(50):6.1f} ms   p99 {anchor.percentile_ms(99):6.1f} ms   "
          f"errors {anchor.errors}")
    print(f"  ratio deletion-requests / healthz: {ratio:.3f}")
    print(f"  target throughput >= {TARGET_RPS:,.0f} requests/s: {_verdict(rps_ok)} ({created.throughput:.1f})")
    print(f"  target p99 <= {TARGET_P99_MS:g} ms:              {_verdict(p99_ok)} ({p99:.1f} ms)")

    broken = created.errors > 0 or anchor.errors > 0 or not server_alive or created.timed_out or anchor.timed_out
    if broken:
        return 1
    if strict and not (rps_ok and p99_ok):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
