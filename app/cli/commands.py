"""What each `lethe` command does: one function per command, given the container and the
parsed arguments, returning the exit status. The grammar (options, help) and the entry point
are in app.cli."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from app.bootstrap import Container, read_checkpoint_file
from app.services.errors import NotFound, Unavailable


def _print(obj: Any) -> None:
    """JSON on stdout: services' typed results (msgspec Structs) and plain dicts alike."""
    print(json.dumps(msgspec.to_builtins(obj), indent=2, sort_keys=False))


def cmd_serve(container: Container, args: argparse.Namespace) -> int:
    import uvicorn

    from app.http.app import create_app
    from jobs.scheduler import Scheduler

    settings = container.settings
    workers = args.workers
    # With its scheduler off on the embedded engine, this is an API process beside `lethe worker`,
    # which owns ClickHouse: webhook calls go to the outbox (SQL), ClickHouse is never opened here.
    container.clickhouse_in_worker = not settings.scheduler and settings.embedded_clickhouse
    container.migrate(clickhouse=not container.clickhouse_in_worker, outage_tolerated=True)
    host, port = args.host or settings.host, args.port or settings.port
    _can_listen(host, port)  # before the startup line says it listens, and before any job runs
    scheduler = None
    if settings.scheduler:
        scheduler = Scheduler(container)
        if workers == 1:
            container.kick = scheduler.kick  # webhook calls and requests start their job at once
        scheduler.start()
    print(f"lethe serve: listening on http://{host}:{port} (SQL: {_store(settings.database_url)}; "
          f"ClickHouse: {_store(settings.clickhouse_url)}; scheduler {'on' if settings.scheduler else 'off'}"
          f"{f'; {workers} API processes' if workers > 1 else ''})", file=sys.stderr, flush=True)
    if workers > 1 and settings.rate_limit_url is None:
        print(f"lethe serve: each of the {workers} API processes counts rate limits on its own (up to {workers}x "
              "the policy's rates); set LETHE_RATE_LIMIT_URL=redis://... to share them", file=sys.stderr, flush=True)
    level = settings.log_level if settings.log_level != "info" else "warning"  # uvicorn's own lines
    try:
        if workers > 1:
            # N API processes (uvicorn's supervisor); this one keeps the scheduler and ClickHouse
            os.environ["LETHE_SCHEDULER"] = "off"
            uvicorn.run("app.http.app:serve_app", factory=True, workers=workers, host=host, port=port,
                        access_log=False, log_level=level)
        else:
            uvicorn.run(create_app(container), host=host, port=port, access_log=False, log_level=level)
    finally:
        if scheduler is not None:
            scheduler.shutdown()
    return 0


def _can_listen(host: str, port: int) -> None:
    """Refuse with one sentence when the address is taken or not this machine's (uvicorn would
    print its own error after our startup line, and exit 3)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _store(url: str) -> str:
    """A store URL fit to print, in the form LETHE_*_URL takes (an absolute chDB folder is
    `chdb:////srv/...`): no user or password."""
    if url.startswith("chdb://"):
        return "chdb:///" + url.removeprefix("chdb://")
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def cmd_worker(container: Container, args: argparse.Namespace) -> int:
    import signal
    import threading

    from prometheus_client import start_http_server

    from app.observability import REQUEST_CENSUS
    from jobs.scheduler import Scheduler

    host = container.settings.host
    try:  # first: a port taken (a second worker on this host) stops it before any job runs
        start_http_server(args.metrics_port, addr=host)  # the worker's own /metrics (jobs, audit chain)
    except OSError as exc:
        print(f"lethe worker: cannot serve /metrics on {host}:{args.metrics_port} ({exc.strerror}): "
              "choose another --metrics-port", file=sys.stderr)
        return 1
    container.migrate(outage_tolerated=True)
    scheduler = Scheduler(container)
    scheduler.start()
    REQUEST_CENSUS.watch(container.uow, container.now)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"lethe worker: scheduler running, metrics on http://{host}:{args.metrics_port}/metrics; "
          "Ctrl-C to stop", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    scheduler.shutdown()
    return 0


def cmd_migrate(container: Container, args: argparse.Namespace) -> int:
    container.migrate()
    print("SQL and ClickHouse schemas are at head", file=sys.stderr)
    return 0


def cmd_project_create(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.accounts.create_project(args.name, args.region))
    return 0


def cmd_project_rotate_webhook_secret(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.webhooks.rotate_signing_secret(args.name))
    print("the previous webhook secret stays valid for 24 h", file=sys.stderr)
    return 0


def cmd_project_rotate_webhook_url(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.webhooks.rotate_url(args.name))
    print("the previous webhook URL keeps working for 24 h", file=sys.stderr)
    return 0


def cmd_project_webhook_auth(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.webhooks.set_methods(args.name, args.allow))
    return 0


def cmd_project_callback(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.callbacks.register(None, args.url, actor="operator:cli", name=args.name))
    print("keep the callback_secret: it is shown once; it signs every callback (Standard Webhooks)", file=sys.stderr)
    return 0


def cmd_project_offboard(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.accounts.offboard_project(args.name))
    print("keys revoked; the offboarding job deletes the project's data (except held data)", file=sys.stderr)
    return 0


def cmd_policy_check(container: Container, args: argparse.Namespace) -> int:
    book = container.policies  # loading already validated every file
    columns = [c for c in book.datamap.values() if not c.event_property]
    properties = [c for c in book.datamap.values() if c.event_property]
    _print({"ok": True, "directory": str(container.settings.policy_dir), "projects": sorted(book.projects),
            "datamap_columns": len(columns), "personal_columns": sum(1 for c in columns if c.personal),
            "event_properties": len(properties), "personal_event_properties": sum(1 for c in properties if c.personal)})
    return 0


def cmd_project_list(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.accounts.list_projects())
    return 0


def cmd_officer_list(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.accounts.list_officers())
    return 0


def cmd_officer_revoke(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.accounts.revoke_officer(args.name))
    return 0


def cmd_officer_create(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.accounts.create_officer(args.name, args.project))
    return 0


def cmd_jobs_list(container: Container, args: argparse.Namespace) -> int:
    from jobs.scheduler import describe

    container.migrate(clickhouse=False)
    _print(describe(container))
    return 0


def cmd_jobs_run(container: Container, args: argparse.Namespace) -> int:
    from jobs.registry import JOBS, run_job

    container.migrate()  # jobs work on both stores
    now = args.now or container.now()
    ahead = now - container.now()
    if ahead > timedelta(minutes=1):
        print(f"lethe: warning: --now is {_span(ahead)} ahead of the clock: whatever is due by then (grace "
              "windows ending, retention, the message feed) is erased for real now", file=sys.stderr)
    names = list(JOBS) if args.name == "all" else [args.name]
    summaries = []
    for name in names:
        if sys.stderr.isatty():
            print(f"running {name} as of {now.isoformat()} ...", file=sys.stderr)
        summaries.append(run_job(container, name, now))
    _print(summaries[0] if len(summaries) == 1 else summaries)
    return 1 if any(s.get("failed") for s in summaries) else 0


def _span(delta: timedelta) -> str:
    days, hours = delta.days, delta.seconds // 3600
    return f"{days} days" if days else f"{hours} hours" if hours else f"{delta.seconds // 60} minutes"


def cmd_audit_verify(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    checkpoints = None
    if args.checkpoint is not None:
        try:
            checkpoints = read_checkpoint_file(args.checkpoint)
        except (OSError, ValueError) as exc:
            print(f"lethe: cannot read the checkpoint file: {exc}", file=sys.stderr)
            return 2
    result = container.audit.verify(checkpoints)
    _print({"ok": result.ok, "entries": result.entries, "head": result.head, "first_bad_seq": result.first_bad_seq,
            "problem": result.problem})
    if not result.ok:
        print(f"audit chain broken at seq {result.first_bad_seq}: {result.problem}", file=sys.stderr)
        return 1
    return 0


def cmd_audit_checkpoint(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    _print(container.audit.checkpoint(container.now()))
    return 0


def cmd_audit_export(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)
    if args.project and args.project not in {p.project for p in container.accounts.list_projects()}:
        raise NotFound(f"no such project: {args.project}")
    projects = [args.project] if args.project else None
    for line in container.audit.export(projects, args.format, user_id=args.user_id, action=args.action,
                                       since=args.since, until=args.until):
        sys.stdout.write(line)
    return 0


def cmd_keys_rotate(container: Container, args: argparse.Namespace) -> int:
    container.migrate(clickhouse=False)  # SQL only: works while `lethe serve` runs

    def progress(done: int, total: int) -> None:
        print(f"re-wrapped {done}/{total} data keys", file=sys.stderr)

    _print(container.keys.rotate(progress))
    return 0


def cmd_subject_export(container: Container, args: argparse.Namespace) -> int:
    """Everything held about one user, decrypted (needs the embedded ClickHouse: the events)."""
    container.migrate()
    with container.uow() as uow:
        project = uow.projects.by_name(args.project)
    if project is None:
        raise NotFound(f"no such project: {args.project}")
    _print(container.subjects.export({project.id: project.name}, args.user_id, actor="operator:cli"))
    return 0
