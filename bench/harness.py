"""Shared pieces for the benchmarks (not a benchmark itself, so not in bench.__main__.MODULES).

- `postgres_database()`: a fresh PostgreSQL database, dropped at the end.
- `LetheProcess`: `lethe` commands and a real `lethe serve` in a temporary working directory,
  killed at the end (and on error).
- `run_load()`: a bounded, closed-loop HTTP/1.1 load generator over keep-alive connections, with
  two clients: `raw` (asyncio streams, a few microseconds of client CPU per request, so the
  server gets nearly all of a shared machine) and `httpx` (httpx.AsyncClient, for comparison).
- `cpu_seconds()`: CPU used so far by a process, to show who used the cores during a phase.
- `policies_with_limits()`: a copy of the repo's policies/ with `[limits]` set to another rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CLIENTS = ("raw", "httpx")


# --- settings from the environment ----------------------------------------------------------
def env_float(name: str, default: float, *, allow_zero: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc
    if value < 0 or (value == 0 and not allow_zero):
        raise SystemExit(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {raw!r}")
    return value


def env_int(name: str, default: int) -> int:
    return max(1, int(env_float(name, default)))


def env_client(default: str = "raw") -> str:
    client = os.environ.get("BENCH_CLIENT", default).strip().lower() or default
    if client not in CLIENTS:
        raise SystemExit(f"BENCH_CLIENT must be one of {', '.join(CLIENTS)}, got {client!r}")
    return client


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the server and drop the database."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU of a process (all its threads); this process when pid is None."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores): /proc/stat minus idle and iowait."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def matching_cpu_seconds(needle: str) -> dict[int, float]:
    """CPU seconds of every process whose command line contains `needle` (e.g. PostgreSQL backends
    serving one database, whose process titles name it)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle.encode() in (entry / "cmdline").read_bytes():
                found[int(entry.name)] = cpu_seconds(int(entry.name))
        except OSError:
            continue
    return found


# --- PostgreSQL ------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres_database(prefix: str = "lethe_bench") -> Iterator[str]:
    """Create `<prefix>_<random>` and yield its SQLAlchemy URL; drop it at the end, whatever happens."""
    import psycopg
    from psycopg import sql

    admin_url = os.environ.get("BENCH_PG_URL", PG_ADMIN_URL)
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def in_process(prefix: str, db_kind: str, secret_key: bytes) -> Iterator[Any]:
    """A migrated `Container` in this process, no server: a throw-away PostgreSQL database (or an
    SQLite file when `db_kind` is "sqlite") and an embedded chDB directory, both gone at the end."""
    from app.bootstrap import Container
    from app.config import Settings
    from app.services.policies import PolicyBook
    from app.stores.clickhouse.client import ClickHouse
    from app.stores.clickhouse.schema import migrate
    from app.stores.sql import migrations
    from app.stores.sql.engine import make_engine

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp, (
            postgres_database(prefix.replace("-", "_")) if db_kind.startswith("postgres")
            else contextlib.nullcontext(f"sqlite:///{tmp}/lethe.db")) as db_url:
        engine = make_engine(db_url)
        ch = ClickHouse(f"chdb://{tmp}/clickhouse")
        settings = Settings(database_url=db_url, clickhouse_url="chdb://unused", policy_dir=repo / "policies",
                            secret_key=secret_key, scheduler=False,
                            callback_private_networks=True)  # bench/callbacks' receiver is on 127.0.0.1
        container = Container(settings=settings, engine=engine, policies=PolicyBook.load(repo / "policies"),
                              clickhouse=ch)
        try:
            migrate(ch)
            migrations.upgrade(engine)
            yield container
        finally:
            container.close()


def new_project(container: Any, name: str) -> str:
    """Create a partner project in an in-process container; returns its id."""
    container.accounts.create_project(name)
    with container.uow() as uow:
        project = uow.projects.by_name(name)
        assert project is not None
        return str(project.id)


def query_database(url: str, statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), connect_timeout=10) as conn:
        return list(conn.execute(statement).fetchall())


# --- policies --------------------------------------------------------------------------------
def policies_with_limits(destination: Path, per_second: int) -> Path:
    """Copy the repo's policies/ to `destination` with every `[limits]` rate set to `per_second`
    (keys missing from the file are added); return `destination`. Checked with the app's own loader."""
    from dataclasses import fields

    from app.domain.policy import Limits
    from app.services.policies import PolicyBook

    shutil.copytree(REPO / "policies", destination)
    default = destination / "default.toml"
    text = default.read_text() if default.exists() else ""
    keys = [f.name for f in fields(Limits)]
    if not re.search(r"^\[limits\]", text, flags=re.MULTILINE):
        text += "\n[limits]\n"
    for key in keys:
        line = f"{key} = {per_second}"
        text, found = re.subn(rf"^{key}\s*=\s*[0-9_]+", line, text, flags=re.MULTILINE)
        if not found:
            text = re.sub(r"^\[limits\][^\n]*\n", lambda m, line=line: m.group(0) + line + "\n", text,
                          count=1, flags=re.MULTILINE)
    default.write_text(text)
    limits = PolicyBook.load(destination).limits
    if any(getattr(limits, key) != per_second for key in keys):
        raise RuntimeError(f"{default}: [limits] not raised to {per_second}: {limits}")
    return destination


# --- the lethe process -------------------------------------------------------------------------
def lethe_executable() -> str:
    beside = Path(sys.executable).parent / "lethe"  # .venv/bin/lethe when run by .venv/bin/python
    if beside.exists():
        return str(beside)
    return str(REPO / ".venv" / "bin" / "lethe")


class LetheProcess:
    """`lethe` in a temporary working directory (so var/ and the chDB directory live there).

    Use as a context manager: the server (if started) is stopped and the directory removed on exit.
    """

    def __init__(self, database_url: str, *, scheduler: bool = True, extra_env: dict[str, str] | None = None,
                 policy_dir: Path | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="lethe-bench-")
        self.cwd = Path(self._tmp.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
        env.update({
            "LETHE_DATABASE_URL": database_url,
            "LETHE_CLICKHOUSE_URL": "chdb:///var/clickhouse",
            "LETHE_POLICY_DIR": str(policy_dir or REPO / "policies"),
            "LETHE_SECRET_KEY": "bench-" + "0" * 32,
            "LETHE_SCHEDULER": "on" if scheduler else "off",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra_env or {})
        self.env = env
        self.server: subprocess.Popen[bytes] | None = None
        self.exit_status: int | None = None  # the server's, once it has ended
        self.port = 0
        self.log_path = self.cwd / "serve.log"
        self._serves = 0

    @property
    def policy_dir(self) -> Path:
        return Path(self.env["LETHE_POLICY_DIR"])

    def use_policies(self, directory: Path) -> None:
        """LETHE_POLICY_DIR for the commands and servers started from now on (the server reads
        its policies, `[limits]` included, once at start-up: stop() and serve() again)."""
        self.env["LETHE_POLICY_DIR"] = str(directory)

    def __enter__(self) -> LetheProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._tmp.cleanup()

    def run(self, *args: str, timeout: float = 120) -> str:
        """A `lethe` command in this working directory; its stdout (raises with stderr on failure)."""
        done = subprocess.run([lethe_executable(), *args], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"lethe {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def run_json(self, *args: str) -> Any:
        return json.loads(self.run(*args))

    def serve(self, *, startup_timeout: float = 90, workers: int = 1) -> str:
        """Start `lethe serve` (`--workers N` API processes) on a free loopback port; return its
        base URL once /healthz answers."""
        if self.alive():
            raise RuntimeError("lethe serve is already running; stop() it first")
        self._serves += 1
        self.port = free_port()
        self.log_path = self.cwd / ("serve.log" if self._serves == 1 else f"serve-{self._serves}.log")
        with self.log_path.open("wb") as log:
            self.server = subprocess.Popen(
                [lethe_executable(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(workers)],
                cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches any child too
            )
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"lethe serve exited {self.server.returncode} during startup:\n{self.log_tail()}")
            if _healthz_ok(self.port):
                return f"http://127.0.0.1:{self.port}"
            time.sleep(0.2)
        raise RuntimeError(f"lethe serve did not answer /healthz within {startup_timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    def alive(self) -> bool:
        if self.server is None:
            return False
        self.exit_status = self.server.poll()
        return self.exit_status is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the server's process group (uvicorn shuts down, the scheduler stops), then SIGKILL."""
        server, self.server = self.server, None
        if server is None or server.poll() is not None:
            self.exit_status = server.returncode if server is not None else self.exit_status
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        self.exit_status = server.returncode

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def logged_errors(self) -> list[str]:
        return [line for line in self.log_lines()
                if '"level": "error"' in line or '"level": "critical"' in line or line.startswith("Traceback")]


def _healthz_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# --- load generation -------------------------------------------------------------------------
@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class PhaseResult:
    name: str
    client: str
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered request
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_by_status: dict[int, list[float]] = field(default_factory=dict)  # seconds
    started_at: float = 0.0  # wall clock (time.time()) when the phase began sending, and when it ended
    ended_at: float = 0.0
    retry_after: Counter[str | None] = field(default_factory=Counter)  # 429 answers by Retry-After (None: absent)
    first_body: dict[int, bytes] = field(default_factory=dict)  # the first body seen per non-2xx status
    transport_errors: int = 0
    timed_out: bool = False
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float = float("nan")
    machine_cpu: float = 0.0

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        """Non-2xx answers plus requests that got no answer (connection errors)."""
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300) + self.transport_errors

    def percentile_ms(self, q: float, statuses: Iterable[int] | None = None) -> float:
        """Nearest-rank percentile of the latencies (of the answers with these statuses only, if given)."""
        if statuses is None:
            latencies = self.latencies
        else:
            latencies = [v for code in statuses for v in self.latencies_by_status.get(code, [])]
        if not latencies:
            return float("nan")
        ordered = sorted(latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
        return ordered[index] * 1000

    def record(self, status: int, latency: float, retry_after: str | None, body: bytes) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1
        self.latencies_by_status.setdefault(status, []).append(latency)
        if status == 429:
            self.retry_after[retry_after] += 1
        if not 200 <= status < 300 and status not in self.first_body:
            self.first_body[status] = body

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        lines = [
            f"{self.name}: {self.answered} answered in {self.seconds:.1f} s with {self.concurrency} connections "
            f"({self.client} client)",
            f"  throughput      {self.throughput:10.1f} requests/s",
            f"  latency         p50 {self.percentile_ms(50):.1f} ms, p90 {self.percentile_ms(90):.1f} ms, "
            f"p99 {self.percentile_ms(99):.1f} ms, max {self.percentile_ms(100):.1f} ms",
            f"  errors          {self.errors} (status codes: {codes or 'none'}; "
            f"no answer: {self.transport_errors}{'; phase timed out' if self.timed_out else ''})",
        ]
        if self.seconds:
            lines.append(self.cpu_line())
        return "\n".join(lines)

    def cpu_line(self) -> str:
        def share(cpu: float) -> str:
            return f"{cpu / self.seconds:.0%}" if self.seconds else "-"

        database = 0.0 if math.isnan(self.database_cpu) else self.database_cpu
        known = self.server_cpu + self.client_cpu + database
        return (f"  CPU (of 1 core) server {share(self.server_cpu)}, PostgreSQL backends {share(self.database_cpu)}, "
                f"load generator {share(self.client_cpu)}, rest of the machine "
                f"{share(max(0.0, self.machine_cpu - known))} (machine busy {share(self.machine_cpu)} "
                f"of {(os.cpu_count() or 1) * 100}%)")


class _RawConnection:
    """One HTTP/1.1 keep-alive connection over asyncio streams: write a request, read one response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send(self, head: bytes, body: bytes) -> tuple[int, str | None, bytes]:
        """(status, Retry-After or None, body; b"" for a chunked one)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        writer.write(head + body if body else head)
        try:
            header_block = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise ConnectionError("response headers too large") from exc
        status = int(header_block[9:12])
        lowered = header_block.lower()
        retry_after = None
        if status == 429 or status >= 500:
            retry_at = lowered.find(b"\r\nretry-after:")
            if retry_at >= 0:
                retry_after = header_block[retry_at + 14:lowered.index(b"\r\n", retry_at + 2)].strip().decode()
        answer = b""
        length_at = lowered.find(b"\r\ncontent-length:")
        if length_at >= 0:
            end = lowered.index(b"\r\n", length_at + 2)
            length = int(lowered[length_at + 17:end])
            if length:
                answer = await reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in lowered:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:  # body delimited by the server closing the connection
            answer = await reader.read()
            await self.close()
        if b"\r\nconnection: close" in lowered:
            await self.close()
        return status, retry_after, answer


def _raw_head(request: Request, host: str, body_length: int) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    if body_length or request.method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _phase(base_url: str, client: str, concurrency: int, seconds: float,
                 make_request: Callable[[], Request], result: PhaseResult, server_pid: int | None,
                 database: str | None) -> None:
    host_port = base_url.split("://", 1)[1]
    host, _, port = host_port.partition(":")
    record = result.record
    perf = time.perf_counter

    if client == "raw":
        connections = [_RawConnection(host, int(port)) for _ in range(concurrency)]

        async def worker(index: int, stop_at: float) -> None:
            conn = connections[index]
            while perf() < stop_at:
                request = make_request()
                head = _raw_head(request, host_port, len(request.body))
                started = perf()
                try:
                    status, retry_after, answer = await conn.send(head, request.body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.transport_errors += 1
                    await conn.close()
                    await asyncio.sleep(0.01)  # do not spin if the server is gone
                    continue
                record(status, perf() - started, retry_after, answer)

        async def close_all() -> None:
            for conn in connections:
                await conn.close()
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        http = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0)

        async def worker(index: int, stop_at: float) -> None:
            while perf() < stop_at:
                request = make_request()
                started = perf()
                try:
                    response = await http.request(request.method, request.path, headers=request.headers,
                                                  content=request.body or None)
                except httpx.HTTPError:
                    result.transport_errors += 1
                    await asyncio.sleep(0.01)
                    continue
                record(response.status_code, perf() - started, response.headers.get("retry-after"),
                       response.content)

        async def close_all() -> None:
            await http.aclose()

    client_cpu0, server_cpu0 = cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0
    machine_cpu0 = machine_cpu_seconds()
    database_cpu0 = matching_cpu_seconds(database) if database else {}
    started = perf()
    result.started_at = time.time()
    tasks = [asyncio.create_task(worker(i, started + seconds)) for i in range(concurrency)]
    try:
        # Bounded: a request in flight at the deadline may take up to 30 s more, then the phase ends.
        _done, pending = await asyncio.wait(tasks, timeout=seconds + 30)
        for task in pending:
            task.cancel()
        if pending:
            result.timed_out = True
            await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
    finally:
        result.seconds = perf() - started
        result.ended_at = time.time()
        result.client_cpu = cpu_seconds() - client_cpu0
        result.server_cpu = (cpu_seconds(server_pid) - server_cpu0) if server_pid else 0.0
        result.machine_cpu = machine_cpu_seconds() - machine_cpu0
        if database:  # backends that ended during the phase are missed; the pool keeps them open
            result.database_cpu = sum(cpu - database_cpu0.get(pid, 0.0)
                                      for pid, cpu in matching_cpu_seconds(database).items())
        await close_all()


def run_load(name: str, base_url: str, make_request: Callable[[], Request], *, seconds: float,
             concurrency: int, client: str = "raw", warmup: float = 0.0,
             server_pid: int | None = None, database: str | None = None) -> PhaseResult:
    """Closed loop: `concurrency` connections, each sending the next request when the last one is
    answered, for `seconds` (after `warmup` seconds whose answers are not counted). `server_pid`
    and `database` (a PostgreSQL database name) only serve to report who used the CPU."""
    if warmup > 0:
        asyncio.run(_phase(base_url, client, concurrency, warmup, make_request,
                           PhaseResult(f"{name} (warm-up)", client, concurrency), server_pid, database))
    result = PhaseResult(name, client, concurrency)
    asyncio.run(_phase(base_url, client, concurrency, seconds, make_request, result, server_pid, database))
    return result
