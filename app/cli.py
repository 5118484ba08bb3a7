"""`lethe`: the operator's command line (CONTRACT §2). Errors go to stderr with a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from app.bootstrap import Container, build, read_checkpoint_file
from app.config import ConfigError, get_settings
from app.domain.policy import PolicyError
from app.logging import configure_logging
from app.ports import EmbeddedStoreBusy
from app.services.errors import NotFound, ServiceError


def _print(obj: Any) -> None:
    """JSON on stdout: services' typed results (msgspec Structs) and plain dicts alike."""
    print(json.dumps(msgspec.to_builtins(obj), indent=2, sort_keys=False))


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {value!r}")
    return int(value)


def _instant(value: str) -> datetime:
    """An ISO 8601 instant with its zone; a bare date with Z (2026-01-01Z) is its midnight UTC."""
    if len(value) == 11 and value.endswith(("Z", "z")):
        value = f"{value[:10]}T00:00:00+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {value!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {value}Z): {value!r}")
    return moment.astimezone(UTC)


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
    scheduler = None
    if settings.scheduler:
        scheduler = Scheduler(container)
        if workers == 1:
            container.kick = scheduler.kick  # webhook calls and requests start their job at once
        scheduler.start()
    host, port = args.host or settings.host, args.port or settings.port
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


def _store(url: str) -> str:
    """A store URL fit to print: no user or password."""
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

    container.migrate(outage_tolerated=True)
    scheduler = Scheduler(container)
    scheduler.start()
    REQUEST_CENSUS.watch(container.uow, container.now)
    host = container.settings.host
    start_http_server(args.metrics_port, addr=host)  # the worker's own /metrics (jobs, audit chain)
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
    _print(container.offboarding.offboard(args.name))
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
    projects = [args.project] if args.project else None
    for line in container.audit.export(projects, args.format, since=args.since, until=args.until):
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


def parser() -> argparse.ArgumentParser:
    from jobs.registry import JOBS

    root = argparse.ArgumentParser(prog="lethe", description="GDPR data-lifecycle and deletion service")
    root.add_argument("--version", action="version", version=f"lethe {version('lethe')}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, serve the API, run the scheduler")
    serve.add_argument("--host", help="default LETHE_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default LETHE_PORT (8000)")
    serve.add_argument("--workers", type=_positive, default=1, metavar="N",
                       help="API processes (default 1). With more than one, this process keeps the scheduler "
                            "and ClickHouse, and the API processes need PostgreSQL to scale")
    serve.set_defaults(fn=cmd_serve)
    worker = sub.add_parser("worker", help="the scheduler alone, with its own /metrics")
    worker.add_argument("--metrics-port", type=int, default=9464, help="where the worker serves /metrics (9464)")
    worker.set_defaults(fn=cmd_worker)
    sub.add_parser("migrate", help="upgrade both stores' schemas").set_defaults(fn=cmd_migrate)

    project = sub.add_parser("project", help="partner projects").add_subparsers(dest="action", required=True)
    create = project.add_parser("create", help="create a project; prints its keys once")
    create.add_argument("name")
    create.add_argument("--region", default="eu")
    create.set_defaults(fn=cmd_project_create)

    offboard = project.add_parser("offboard", help="end a partnership: revoke keys, delete its data")
    offboard.add_argument("name")
    offboard.set_defaults(fn=cmd_project_offboard)

    rotate = project.add_parser("rotate-webhook-secret", help="a new Standard Webhooks signing secret (shown once); "
                                "the old one stays valid for 24 h")
    rotate.add_argument("name")
    rotate.set_defaults(fn=cmd_project_rotate_webhook_secret)
    rotate_url = project.add_parser("rotate-webhook-url", help="a new secret webhook URL (shown once); "
                                    "the old one keeps working for 24 h")
    rotate_url.add_argument("name")
    rotate_url.set_defaults(fn=cmd_project_rotate_webhook_url)
    hook_auth = project.add_parser("webhook-auth", help="which webhook auth methods the project accepts")
    hook_auth.add_argument("name")
    hook_auth.add_argument("--allow", required=True, metavar="METHODS",
                           help="comma-separated subset of signed,bearer,url (new projects: all three)")
    hook_auth.set_defaults(fn=cmd_project_webhook_auth)
    callback = project.add_parser("callback", help="register the URL each request transition is POSTed to; "
                                  "prints the callback_secret that signs them (shown once)")
    callback.add_argument("name")
    callback.add_argument("url")
    callback.set_defaults(fn=cmd_project_callback)

    policy = sub.add_parser("policy", help="lifecycle policies").add_subparsers(dest="action", required=True)
    policy.add_parser("check", help="validate policies/ and print a summary").set_defaults(fn=cmd_policy_check)

    officer = sub.add_parser("officer", help="compliance officers").add_subparsers(dest="action", required=True)
    ocreate = officer.add_parser("create", help="create an officer; prints the token once")
    ocreate.add_argument("name")
    ocreate.add_argument("--project", action="append", required=True, help="repeat for several projects")
    ocreate.set_defaults(fn=cmd_officer_create)
    officer.add_parser("list", help="officers and their projects (JSON)").set_defaults(fn=cmd_officer_list)
    revoke = officer.add_parser("revoke", help="revoke an officer's token (within 5 s in every process)")
    revoke.add_argument("name")
    revoke.set_defaults(fn=cmd_officer_revoke)
    project_list = project.add_parser("list", help="projects (JSON)")
    project_list.set_defaults(fn=cmd_project_list)

    jobs = sub.add_parser("jobs", help="scheduled jobs").add_subparsers(dest="action", required=True)
    jobs.add_parser("list", help="jobs, triggers and last runs").set_defaults(fn=cmd_jobs_list)
    run = jobs.add_parser("run", help="run one job once and print its JSON summary")
    run.add_argument("name", choices=[*JOBS, "all"])
    run.add_argument("--now", type=_instant, help="run as of this ISO 8601 instant (default: now)")
    run.set_defaults(fn=cmd_jobs_run)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    verify = audit.add_parser("verify", help="walk the hash chain and check the checkpoints")
    verify.add_argument("--checkpoint", type=Path, help="a file of checkpoints kept outside (JSON or JSON lines)")
    verify.set_defaults(fn=cmd_audit_verify)
    audit.add_parser("checkpoint", help="print a signed head of the chain (also kept in var/)"
                     ).set_defaults(fn=cmd_audit_checkpoint)
    export = audit.add_parser("export", help="write entries to stdout")
    export.add_argument("--project")
    export.add_argument("--since", type=_instant)
    export.add_argument("--until", type=_instant)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.set_defaults(fn=cmd_audit_export)

    subject = sub.add_parser("subject", help="one user's data").add_subparsers(dest="action", required=True)
    sexport = subject.add_parser("export", help="everything held about a user, decrypted, as JSON (Art. 15/20)")
    sexport.add_argument("project")
    sexport.add_argument("user_id")
    sexport.set_defaults(fn=cmd_subject_export)

    keys = sub.add_parser("keys", help="the key hierarchy").add_subparsers(dest="action", required=True)
    keys.add_parser("rotate", help="re-wrap every data key under a new key-encryption key version"
                    ).set_defaults(fn=cmd_keys_rotate)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    try:
        container = build(get_settings())
        configure_logging(container.settings.log_level)
    except (ConfigError, PolicyError) as exc:
        print(f"lethe: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ArgumentError, NoSuchModuleError):
        print("lethe: configuration error: LETHE_DATABASE_URL is not a database URL this installation can use "
              "(e.g. sqlite:///var/lethe.db or postgresql+psycopg://user@host/db)", file=sys.stderr)
        return 2
    try:
        code: int = args.fn(container, args)
        return code
    except (ServiceError, EmbeddedStoreBusy) as exc:
        print(f"lethe: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(f"lethe: the SQL database does not answer ({type(exc.orig).__name__}): check LETHE_DATABASE_URL "
              "and that the server is up", file=sys.stderr)
        return 1
    finally:
        container.close()


if __name__ == "__main__":
    sys.exit(main())
