"""`lethe`: the operator's command line (CONTRACT §2). Errors go to stderr with a non-zero exit.

This module is the grammar (commands, options, help) and the entry point; what each command
does is in app.cli.commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from clickhouse_connect.driver import exceptions as ch_errors
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from app.bootstrap import build
from app.cli.commands import (
    cmd_audit_checkpoint,
    cmd_audit_export,
    cmd_audit_verify,
    cmd_jobs_list,
    cmd_jobs_run,
    cmd_keys_rotate,
    cmd_migrate,
    cmd_officer_create,
    cmd_officer_list,
    cmd_officer_revoke,
    cmd_policy_check,
    cmd_project_callback,
    cmd_project_create,
    cmd_project_list,
    cmd_project_offboard,
    cmd_project_rotate_webhook_secret,
    cmd_project_rotate_webhook_url,
    cmd_project_webhook_auth,
    cmd_serve,
    cmd_subject_export,
    cmd_worker,
)
from app.config import ConfigError, get_settings
from app.domain.policy import PolicyError
from app.logging import configure_logging
from app.ports import EmbeddedStoreBusy
from app.services.errors import ServiceError
from app.services.keys import KeyringError


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port, 1 to 65535, got {value!r}")
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


def _run_instant(value: str) -> datetime:
    """A job's --now: an instant the lifecycle's arithmetic can reach (13 months back, a year on)."""
    moment = _instant(value)
    if not 1970 <= moment.year <= 9000:
        raise argparse.ArgumentTypeError(f"an instant between 1970 and 9000, got {value!r}")
    return moment


def parser() -> argparse.ArgumentParser:
    from jobs.registry import JOBS

    root = argparse.ArgumentParser(prog="lethe", description="GDPR data-lifecycle and deletion service")
    root.add_argument("--version", action="version", version=f"lethe {version('lethe')}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, serve the API, run the scheduler")
    serve.add_argument("--host", help="default LETHE_HOST (127.0.0.1)")
    serve.add_argument("--port", type=_port, help="default LETHE_PORT (8000)")
    serve.add_argument("--workers", type=_positive, default=1, metavar="N",
                       help="API processes (default 1). With more than one, this process keeps the scheduler "
                            "and ClickHouse, and the API processes need PostgreSQL to scale")
    serve.set_defaults(fn=cmd_serve)
    worker = sub.add_parser("worker", help="the scheduler alone, with its own /metrics")
    worker.add_argument("--metrics-port", type=_port, default=9464, help="where the worker serves /metrics (9464)")
    worker.set_defaults(fn=cmd_worker)
    sub.add_parser("migrate", help="upgrade both stores' schemas").set_defaults(fn=cmd_migrate)

    project = sub.add_parser("project", help="partner projects").add_subparsers(dest="action", required=True)
    create = project.add_parser("create", help="create a project; prints its keys once")
    create.add_argument("name", help="the project's name, as the platform sends it in value.project")
    create.add_argument("--region", default="eu", help="where the project's data is processed (default: eu)")
    create.set_defaults(fn=cmd_project_create)

    offboard = project.add_parser("offboard", help="end a partnership: revoke keys, delete its data")
    offboard.add_argument("name", help="the project whose partnership ends")
    offboard.set_defaults(fn=cmd_project_offboard)

    rotate = project.add_parser("rotate-webhook-secret", help="a new Standard Webhooks signing secret (shown once); "
                                "the old one stays valid for 24 h")
    rotate.add_argument("name", help="the project")
    rotate.set_defaults(fn=cmd_project_rotate_webhook_secret)
    rotate_url = project.add_parser("rotate-webhook-url", help="a new secret webhook URL (shown once); "
                                    "the old one keeps working for 24 h")
    rotate_url.add_argument("name", help="the project")
    rotate_url.set_defaults(fn=cmd_project_rotate_webhook_url)
    hook_auth = project.add_parser("webhook-auth", help="which webhook auth methods the project accepts")
    hook_auth.add_argument("name", help="the project")
    hook_auth.add_argument("--allow", required=True, metavar="METHODS",
                           help="comma-separated subset of signed,bearer,url (new projects: all three)")
    hook_auth.set_defaults(fn=cmd_project_webhook_auth)
    callback = project.add_parser("callback", help="register the URL each request transition is POSTed to; "
                                  "prints the callback_secret that signs them (shown once)")
    callback.add_argument("name", help="the project")
    callback.add_argument("url", help="where each request transition is POSTed (https://...)")
    callback.set_defaults(fn=cmd_project_callback)

    policy = sub.add_parser("policy", help="lifecycle policies").add_subparsers(dest="action", required=True)
    policy.add_parser("check", help="validate policies/ and print a summary").set_defaults(fn=cmd_policy_check)

    officer = sub.add_parser("officer", help="compliance officers").add_subparsers(dest="action", required=True)
    ocreate = officer.add_parser("create", help="create an officer; prints the token once")
    ocreate.add_argument("name", help="the officer's name (unique)")
    ocreate.add_argument("--project", action="append", required=True, help="repeat for several projects")
    ocreate.set_defaults(fn=cmd_officer_create)
    officer.add_parser("list", help="officers and their projects (JSON)").set_defaults(fn=cmd_officer_list)
    revoke = officer.add_parser("revoke", help="revoke an officer's token (within 5 s in every process)")
    revoke.add_argument("name", help="the officer whose token stops working")
    revoke.set_defaults(fn=cmd_officer_revoke)
    project_list = project.add_parser("list", help="projects (JSON)")
    project_list.set_defaults(fn=cmd_project_list)

    jobs = sub.add_parser("jobs", help="scheduled jobs").add_subparsers(dest="action", required=True)
    jobs.add_parser("list", help="jobs, triggers and last runs").set_defaults(fn=cmd_jobs_list)
    run = jobs.add_parser("run", help="run one job once and print its JSON summary")
    run.add_argument("name", choices=[*JOBS, "all"], help="the job, or all of them in order")
    run.add_argument("--now", type=_run_instant, help="run as of this ISO 8601 instant (default: now)")
    run.set_defaults(fn=cmd_jobs_run)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    verify = audit.add_parser("verify", help="walk the hash chain and check the checkpoints")
    verify.add_argument("--checkpoint", type=Path, help="a file of checkpoints kept outside (JSON or JSON lines)")
    verify.set_defaults(fn=cmd_audit_verify)
    audit.add_parser("checkpoint", help="print a signed head of the chain (also kept in var/)"
                     ).set_defaults(fn=cmd_audit_checkpoint)
    export = audit.add_parser("export", help="write entries to stdout, oldest first")
    export.add_argument("--project", help="one project's entries (default: every project)")
    export.add_argument("--user-id", help="entries about this user (matched by the keyed hash the log stores)")
    export.add_argument("--action", help="entries of this action, e.g. deletion_request.completed")
    export.add_argument("--since", type=_instant, help="entries at or after this instant (ISO 8601 with a zone)")
    export.add_argument("--until", type=_instant, help="entries before this instant (ISO 8601 with a zone)")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="JSON lines (default) or CSV")
    export.set_defaults(fn=cmd_audit_export)

    subject = sub.add_parser("subject", help="one user's data").add_subparsers(dest="action", required=True)
    sexport = subject.add_parser("export", help="everything held about a user, decrypted, as JSON (Art. 15/20)")
    sexport.add_argument("project", help="the project")
    sexport.add_argument("user_id", help="the user id as the platform sends it")
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
        if args.fn is not cmd_policy_check:  # the one command that does not open the database
            container.keys.check_secret()  # before anything is written under another secret
        code: int = args.fn(container, args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except KeyringError as exc:  # LETHE_SECRET_KEY is not the one the keys were made with
        print(f"lethe: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ServiceError, EmbeddedStoreBusy) as exc:
        print(f"lethe: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(f"lethe: the SQL database does not answer ({type(exc.orig).__name__}): check LETHE_DATABASE_URL "
              "and that the server is up", file=sys.stderr)
        return 1
    except ch_errors.OperationalError:  # its message holds the URL (and so, perhaps, a password)
        print("lethe: ClickHouse does not answer: check LETHE_CLICKHOUSE_URL and that the server is up",
              file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`lethe audit export | head`): stop quietly
        # what is still buffered would fail again at exit: send it nowhere (Python's signal docs)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        container.close()
