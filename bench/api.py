"""Benchmark: the partner API's write path, POST /v1/deletion-requests, on PostgreSQL.

Starts a real `lethe serve` (scheduler on, as in production-like single-process use) on a fresh
PostgreSQL database and a temporary working directory, creates a project, then:

1. anchor: GET /healthz (no auth, no database) with the same client and connections, to show
   what the server process itself can answer on this machine;
2. POST /v1/deletion-requests `{"user_id": <unique>, "mode": "grace"}` with the project's api_key.

Target (issue): >= 1,000 requests/s with p99 <= 50 ms on this 2-core machine.

Settings (environment): BENCH_SECONDS (30), BENCH_ANCHOR_SECONDS (10), BENCH_WARMUP_SECONDS (2,
not counted), BENCH_CONCURRENCY (32 connections), BENCH_CLIENT (raw | httpx), BENCH_PG_URL
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

TARGET_RPS = 1000.0
TARGET_P99_MS = 50.0
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
    client = env_client("raw")
    strict = os.environ.get("BENCH_STRICT", "").strip() in {"1", "true", "yes"}
    exit_on_sigterm()

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"client:  {_client_label(client)}; {concurrency} connections; warm-up {warmup:g} s")
    print(f"phases:  GET /healthz {anchor_seconds:g} s, POST /v1/deletion-requests {seconds:g} s")
    print(f"target:  >= {TARGET_RPS:,.0f} requests/s with p99 <= {TARGET_P99_MS:g} ms on this 2-core machine")
    sys.stdout.flush()

    with postgres_database() as database_url, LetheProcess(database_url, scheduler=True) as lethe:
        keys = lethe.run_json("project", "create", "bench")
        base_url = lethe.serve()
        database = database_url.rsplit("/", 1)[1]
        print(f"server:  lethe serve on {base_url} (PostgreSQL database {database}, "
              "LETHE_SCHEDULER=on, chDB in a temporary directory)\n", flush=True)

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

        created = run_load("POST /v1/deletion-requests", base_url, deletion_request, seconds=seconds,
                           concurrency=concurrency, client=client, warmup=warmup, server_pid=lethe.pid,
                           database=database)
        print(created.summary(), flush=True)

        server_alive = lethe.alive()
        counts, waited = _wait_for_anonymise(database_url)
        logged_errors = lethe.logged_errors()
        if not server_alive:
            print(f"  the server ended during the load (exit status {lethe.exit_status}; negative: killed by "
                  f"that signal); the end of its log:\n{lethe.log_tail(15)}")
        lethe.stop()

    return _report(anchor, created, counts, waited, server_alive, logged_errors, strict)


def _report(anchor: PhaseResult, created: PhaseResult, counts: dict[str, int], waited: float,
            server_alive: bool, logged_errors: list[str], strict: bool) -> int:
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
