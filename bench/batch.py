"""`python -m bench batch`: a partner's 10,000-user batch (issue 12).

In-process, no server, on a throw-away PostgreSQL database (BENCH_BATCH_DB=sqlite for a file)
and an embedded chDB directory: `BatchService.submit` with BENCH_BATCH (10,000) new user ids,
timed from the call to its commit (what the partner's 202 waits for), three times (a fresh
project each: new users, new subjects, new keys); then the next `anonymise` job run over those
requests. Checks by reading: every request of the batch created and then `in_grace`.

Target: acknowledged in <= 2 s on PostgreSQL (issue 12). The whole anonymise run against a
full-table copy of 10M events is what `bench/erasure` (c) measures; its figure is printed there.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import UTC, datetime

from bench.harness import env_int, exit_on_sigterm, in_process, new_project

SECRET = b"bench-batch-secret-0000000000000000000000"
TARGET_ACK = 2.0  # seconds


def main() -> int:
    size = env_int("BENCH_BATCH", 10_000)
    rounds = env_int("BENCH_ROUNDS", 3)
    db_kind = os.environ.get("BENCH_BATCH_DB", "postgresql").strip().lower() or "postgresql"
    exit_on_sigterm()

    from app.domain.requests import Mode

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"data:    {rounds} batches of {size:,} new user ids (grace mode, with a reason), SQL {db_kind}")
    print(f"target:  acknowledged (committed) in <= {TARGET_ACK:g} s on PostgreSQL", flush=True)
    acks, runs = [], []
    with in_process("lethe-bench-batch", db_kind, SECRET) as container:
        for n in range(rounds):
            name = f"bench-batch-{n}"
            project_id = new_project(container, name)
            users = [f"bench-user-{n}-{i}" for i in range(size)]
            started = time.perf_counter()
            answer = container.batches.submit(project_id, users, Mode.GRACE, "bench: market closed",
                                              actor="partner:bench")
            acks.append(time.perf_counter() - started)
            created = sum(1 for o in answer.outcomes if o.outcome == "created")
            started = time.perf_counter()
            summary = container.erasure.anonymise(datetime.now(UTC))
            runs.append(time.perf_counter() - started)
            progress = container.batches.progress(project_id, answer.batch)
            ok = created == size and progress.by_status == {"in_grace": size}
            print(f"  batch {n + 1}: acknowledged in {acks[-1]:.3f} s ({created:,} created); next anonymise "
                  f"run {runs[-1]:.3f} s ({summary.processed:,} processed); progress {progress.by_status}"
                  f" {'ok' if ok else 'FAIL'}", flush=True)
            if not ok:
                return 1
    median = statistics.median(acks)
    print("\nresult:")
    print(f"  batch of {size:,} acknowledged: median {median:.3f} s (runs: {', '.join(f'{a:.3f}' for a in acks)})")
    print(f"  next anonymise run over the batch: median {statistics.median(runs):.3f} s")
    print(f"  target ack <= {TARGET_ACK:g} s: {'PASS' if median <= TARGET_ACK else 'MISS'} ({median:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
