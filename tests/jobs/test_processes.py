"""Real processes (issue 9): `lethe serve --workers N` on PostgreSQL, SQL-only commands while it
runs, and a service killed with SIGKILL in the middle of a stream of webhook calls and drains:
after a restart and the platform's retries, every acknowledged event is in ClickHouse once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN
from tests.fixtures.platform import PROJECT, frontend
from tests.jobs.test_cli import LETHE, env, free_port, lethe, wait_until_up

COUNT_EVENTS = ("import json, sys; from app.stores.clickhouse.client import ClickHouse; "
                "print(json.dumps(list(ClickHouse(sys.argv[1]).rows("
                "'SELECT count(), uniqExact(dedup_key) FROM events')[0])))")


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"lethe_proc_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def serve(workdir: Path, port: int, *args: str, **extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([LETHE, "serve", "--port", str(port), *args], cwd=workdir,
                            env=env(LETHE_SCHEDULER="on", **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_until_up(proc, f"http://127.0.0.1:{port}")
    return proc


def post(url: str, token: str, body: Any) -> tuple[int, dict[str, Any]] | None:
    """The answer, or None when the server died before answering (the platform retries then)."""
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None


def outbox_empty(base: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            if json.loads(response.read())["outbox"]["events"] == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the outbox was not drained within {within} s")


def events_in_clickhouse(workdir: Path) -> tuple[int, int]:
    """(rows, distinct events), read once the service is stopped (the embedded engine is one process's)."""
    out = subprocess.run([sys.executable, "-c", COUNT_EVENTS, f"chdb://{workdir / 'var' / 'clickhouse'}"],
                         capture_output=True, text=True, timeout=120, check=True, cwd=Path(__file__).parents[2])
    rows, distinct = json.loads(out.stdout.strip().splitlines()[-1])
    return int(rows), int(distinct)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def bodies(n: int, size: int, tag: str) -> list[list[dict[str, Any]]]:
    return [[frontend("message_sent", f"user-{tag}-{b % 7}", message_id=f"m-{tag}-{b}-{i}", text=f"hi {i}",
                      room=f"room-{b % 3}") for i in range(size)] for b in range(n)]


def test_many_api_processes_on_postgresql_and_sql_commands_beside_them(tmp_path: Path, pg_database: str) -> None:
    db = {"LETHE_DATABASE_URL": pg_database}
    keys = json.loads(lethe(tmp_path, "project", "create", PROJECT, **db).stdout)
    port = free_port()
    proc = serve(tmp_path, port, "--workers", "2", **db)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children(proc.pid)) >= 2  # uvicorn's API processes; this one keeps the scheduler
        calls = bodies(40, 25, "w")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda b: post(f"{base}/v1/events", keys["webhook_token"], b), calls))
            requests = list(pool.map(lambda i: post(f"{base}/v1/deletion-requests", keys["api_key"],
                                                     {"user_id": f"gone-{i}"}), range(40)))
        assert all(a is not None and a[0] == 202 and a[1]["accepted"] == 25 for a in answers), answers[:3]
        assert all(r is not None and r[0] == 202 for r in requests)
        # commands that need only SQL work while the service runs (the embedded ClickHouse is busy)
        assert json.loads(lethe(tmp_path, "project", "create", "beta", **db).stdout)["project"] == "beta"
        assert json.loads(lethe(tmp_path, "officer", "create", "olga", "--project", PROJECT, **db).stdout)["token"]
        assert lethe(tmp_path, "audit", "verify", **db).returncode == 0
        assert json.loads(lethe(tmp_path, "officer", "revoke", "olga", **db).stdout)["revoked_at"]
        assert json.loads(lethe(tmp_path, "project", "offboard", "beta", **db).stdout)["status"] == "offboarding"
        assert {p["project"] for p in json.loads(lethe(tmp_path, "project", "list", **db).stdout)} == {PROJECT, "beta"}
        assert lethe(tmp_path, "keys", "rotate", **db).returncode == 0
        outbox_empty(base)  # the parent's scheduler drained what the API processes acknowledged
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "2 API processes" in output and "Traceback" not in output, output
    assert events_in_clickhouse(tmp_path) == (1000, 1000)


def test_sigkill_mid_stream_loses_no_acknowledged_event_and_doubles_none(tmp_path: Path) -> None:
    keys = json.loads(lethe(tmp_path, "project", "create", PROJECT).stdout)
    calls = bodies(120, 30, "k")
    acked: set[int] = set()
    lock = threading.Lock()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/events"

    def send(index: int) -> None:
        answer = post(url, keys["webhook_token"], calls[index])
        if answer is not None and answer[0] == 202:
            with lock:
                acked.add(index)

    proc = serve(tmp_path, port)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send, i) for i in range(len(calls))]
        while len(acked) < 40:  # well into the stream: calls in flight, drains under way
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        for f in futures:
            f.result()
    proc.wait(timeout=10)
    assert 40 <= len(acked) < len(calls), len(acked)  # the kill cut the stream

    proc = serve(tmp_path, port)  # restarted: the platform sends every call it got no 202 for
    try:
        first_acked = set(acked)
        for index in range(len(calls)):
            if index not in first_acked:
                send(index)
        assert acked == set(range(len(calls)))
        again = post(url, keys["webhook_token"], calls[0])  # a retry of an acknowledged call: no effect
        assert again is not None and again[1]["duplicates"] == 30
        outbox_empty(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert events_in_clickhouse(tmp_path) == (120 * 30, 120 * 30)
