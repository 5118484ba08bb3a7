"""The real `lethe` command, as an operator runs it, from a directory other than the repo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LETHE = str(Path(sys.executable).with_name("lethe"))
ALL_JOBS = ["anonymise", "purge", "retention", "message_feed", "offboarding", "audit_verify", "callbacks", "outbox",
            "key_compaction"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    return {**base, "LETHE_POLICY_DIR": str(ROOT / "policies"), "LETHE_SCHEDULER": "off", **extra}


def lethe(cwd: Path, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([LETHE, *args], cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"lethe {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def test_operator_flow_on_the_embedded_default(workdir: Path) -> None:
    created = json.loads(lethe(workdir, "project", "create", "acme").stdout)
    assert set(created) == {"project", "api_key", "webhook_token", "webhook_secret", "webhook_url_path"}
    assert (workdir / "var" / "lethe.db").exists()
    assert (workdir / "var" / "secret.key").stat().st_mode & 0o777 == 0o600
    duplicate = lethe(workdir, "project", "create", "acme", check=False)
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr

    officer = json.loads(lethe(workdir, "officer", "create", "olga", "--project", "acme").stdout)
    assert officer["officer"] == "olga" and officer["token"].startswith("lth_off_")
    missing = lethe(workdir, "officer", "create", "bob", "--project", "nope", check=False)
    assert missing.returncode != 0 and "no such project: nope" in missing.stderr

    summary = json.loads(lethe(workdir, "jobs", "run", "anonymise", "--now", "2026-06-01T00:00:00Z").stdout)
    assert summary["job"] == "anonymise" and summary["now"] == "2026-06-01T00:00:00+00:00"
    assert {"processed", "held", "failed"} <= set(summary)
    every = json.loads(lethe(workdir, "jobs", "run", "all").stdout)
    assert [s["job"] for s in every] == ALL_JOBS
    listed = json.loads(lethe(workdir, "jobs", "list").stdout)
    assert [j["job"] for j in listed] == ALL_JOBS
    assert listed[0]["last_run"]["ok"] is True

    nobody = lethe(workdir, "subject", "export", "acme", "a/b+c==", check=False)
    assert nobody.returncode != 0 and "holds nothing about this user" in nobody.stderr
    assert "no such project: nope" in lethe(workdir, "subject", "export", "nope", "u", check=False).stderr

    verified = json.loads(lethe(workdir, "audit", "verify").stdout)
    assert verified["ok"] is True and verified["entries"] == 2
    exported = lethe(workdir, "audit", "export", "--format", "csv").stdout.splitlines()
    assert exported[0].startswith("seq,at,actor,action") and len(exported) == 3
    jsonl = [json.loads(line) for line in lethe(workdir, "audit", "export", "--project", "acme").stdout.splitlines()]
    assert [e["action"] for e in jsonl] == ["project.created", "officer.created"]


def test_bad_input_fails_with_a_message(workdir: Path) -> None:
    bad_now = lethe(workdir, "jobs", "run", "purge", "--now", "yesterday", check=False)
    assert bad_now.returncode == 2 and "ISO 8601" in bad_now.stderr
    bad_job = lethe(workdir, "jobs", "run", "sweep", check=False)
    assert bad_job.returncode == 2 and "invalid choice" in bad_job.stderr
    bad_config = lethe(workdir, "jobs", "list", check=False, LETHE_SCHEDULER="sometimes")
    assert bad_config.returncode == 2 and "LETHE_SCHEDULER" in bad_config.stderr


def test_tampered_audit_log_fails_verify(workdir: Path) -> None:
    import sqlite3

    lethe(workdir, "project", "create", "acme")
    lethe(workdir, "project", "create", "beta")
    with sqlite3.connect(workdir / "var" / "lethe.db") as db:
        db.execute("UPDATE audit_log SET project = 'gamma' WHERE seq = 2")
    result = lethe(workdir, "audit", "verify", check=False)
    assert result.returncode == 1 and "seq 2" in result.stderr
    assert json.loads(result.stdout)["first_bad_seq"] == 2


def test_a_checkpoint_kept_outside_catches_a_truncated_log(workdir: Path) -> None:
    import sqlite3

    for name in ("acme", "beta", "gamma"):
        lethe(workdir, "project", "create", name)
    checkpoint = json.loads(lethe(workdir, "audit", "checkpoint").stdout)
    assert checkpoint["seq"] == 3 and set(checkpoint) == {"seq", "hash", "at", "signature"}
    kept = workdir / "kept-by-the-officer.json"
    kept.write_text(json.dumps(checkpoint))
    assert lethe(workdir, "audit", "verify", "--checkpoint", str(kept)).returncode == 0
    with sqlite3.connect(workdir / "var" / "lethe.db") as db:  # drop the last entry, fix the head to match
        db.execute("DELETE FROM audit_log WHERE seq = 3")
        db.execute("UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2)")
    (workdir / "var" / "audit-checkpoints.jsonl").unlink()  # the writer wiped the local copy too
    assert lethe(workdir, "audit", "verify").returncode == 0  # consistent in itself...
    caught = lethe(workdir, "audit", "verify", "--checkpoint", str(kept), check=False)
    assert caught.returncode == 1 and "truncated" in caught.stderr  # ...but not with the checkpoint
    missing = lethe(workdir, "audit", "verify", "--checkpoint", str(workdir / "nope.json"), check=False)
    assert missing.returncode == 2 and "cannot read the checkpoint file" in missing.stderr
    for shape, said in (("[]", "checkpoint 1: a checkpoint is a JSON object"), ('{"seq": 5}', "a JSON object"),
                        ("", "holds no checkpoint")):
        (workdir / "shape.json").write_text(shape)  # the operator's mistake, not tampering
        wrong = lethe(workdir, "audit", "verify", "--checkpoint", str(workdir / "shape.json"), check=False)
        assert wrong.returncode == 2 and "cannot read the checkpoint file" in wrong.stderr and said in wrong.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(workdir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `lethe serve` with its scheduler, on the embedded stores."""
    keys = json.loads(lethe(workdir, "project", "create", "acme").stdout)
    port = free_port()
    proc = subprocess.Popen([LETHE, "serve", "--port", str(port)], cwd=workdir, env=env(LETHE_SCHEDULER="on"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, base)
        yield base, keys
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def wait_until_up(proc: subprocess.Popen[str], base: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.stdout else "serve exited") from None
            time.sleep(0.1)
    raise AssertionError(f"{base} did not answer within 10 s")


def call(method: str, url: str, token: str, body: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_serve_anonymises_right_after_a_request_and_holds_the_embedded_store(
    server: tuple[str, dict[str, str]], workdir: Path
) -> None:
    base, keys = server
    status, created = call("POST", f"{base}/v1/deletion-requests", keys["api_key"], {"user_id": "u-1"})
    assert status == 202 and created["status"] == "pending"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, current = call("GET", f"{base}/v1/deletion-requests/{created['id']}", keys["api_key"])
        if current["status"] == "in_grace":
            break
        time.sleep(0.1)
    assert current["status"] == "in_grace"  # the scheduler was kicked; no minute-long wait

    busy = lethe(workdir, "migrate", check=False)
    assert busy.returncode == 1
    assert "in use by another process" in busy.stderr and "lethe serve" in busy.stderr


def test_policy_check_and_an_invalid_policy_stops_the_service(workdir: Path) -> None:
    checked = json.loads(lethe(workdir, "policy", "check").stdout)
    assert checked["ok"] is True and checked["personal_columns"] > 10
    policies = workdir / "policies"
    (policies / "projects").mkdir(parents=True)
    (policies / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (policies / "projects" / "acme.toml").write_text("[lifecycle]\ngrace_days = \"thirty\"\n")
    bad = lethe(workdir, "policy", "check", check=False, LETHE_POLICY_DIR=str(policies))
    assert bad.returncode == 2 and "acme.toml" in bad.stderr and "lifecycle.grace_days" in bad.stderr
    serve = lethe(workdir, "serve", "--port", str(free_port()), check=False, LETHE_POLICY_DIR=str(policies))
    assert serve.returncode == 2 and "acme.toml" in serve.stderr


def test_offboard_from_the_command_line(workdir: Path) -> None:
    lethe(workdir, "project", "create", "acme")
    assert json.loads(lethe(workdir, "project", "offboard", "acme").stdout) == {"project": "acme",
                                                                                 "status": "offboarding"}
    again = lethe(workdir, "project", "offboard", "acme", check=False)
    assert again.returncode == 1 and "already offboarding" in again.stderr
    summary = json.loads(lethe(workdir, "jobs", "run", "offboarding").stdout)
    assert summary["processed"] == 1


def test_version_and_configuration_mistakes_are_one_sentence(workdir: Path) -> None:
    assert lethe(workdir, "--version").stdout.strip() == "lethe 0.1.0"
    (workdir / "empty").mkdir()
    for extra, said in (({"LETHE_POLICY_DIR": str(workdir / "nope")}, "policy directory"),
                        ({"LETHE_POLICY_DIR": str(workdir / "empty")}, "holds no policy (default.toml"),
                        ({"LETHE_DATABASE_URL": "nonsense://x"}, "LETHE_DATABASE_URL must be a SQLite or PostgreSQL"),
                        ({"LETHE_DATABASE_URL": "mysql://u@h/db"}, "LETHE_DATABASE_URL must be a SQLite or PostgreSQL"),
                        ({"LETHE_CLICKHOUSE_URL": "notaurl"}, "LETHE_CLICKHOUSE_URL must be chdb:///"),
                        ({"LETHE_PORT": "eighty"}, "LETHE_PORT must be a TCP port number"),
                        ({"LETHE_SECRET_KEY": "short"}, "LETHE_SECRET_KEY must be at least 32 characters")):
        failed = lethe(workdir, "policy", "check", check=False, **extra)
        assert failed.returncode == 2 and said in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
    down = lethe(workdir, "migrate", check=False, LETHE_DATABASE_URL="postgresql+psycopg://lethe:pw@127.0.0.1:9/x")
    assert down.returncode == 1 and "the SQL database does not answer" in down.stderr and "Traceback" not in down.stderr
    unanswered = lethe(workdir, "jobs", "run", "outbox", check=False,
                       LETHE_CLICKHOUSE_URL="http://lethe:pw-secret@127.0.0.1:9/lethe")
    assert unanswered.returncode == 1 and unanswered.stderr.strip() == (
        "lethe: ClickHouse does not answer: check LETHE_CLICKHOUSE_URL and that the server is up")


def test_audit_export_takes_a_bare_date_with_its_zone(workdir: Path) -> None:
    lethe(workdir, "project", "create", "acme")
    since = lethe(workdir, "audit", "export", "--since", "2026-01-01Z")
    assert [json.loads(line)["action"] for line in since.stdout.splitlines()] == ["project.created"]
    assert lethe(workdir, "audit", "export", "--action", "project.created").stdout.count("\n") == 1
    assert lethe(workdir, "audit", "export", "--user-id", "u-nobody").stdout == ""
    unknown = lethe(workdir, "audit", "export", "--project", "nosuch", check=False)
    assert unknown.returncode == 1 and "no such project: nosuch" in unknown.stderr
    naive = lethe(workdir, "audit", "export", "--since", "2026-01-01", check=False)
    assert naive.returncode == 2 and "give a time zone" in naive.stderr


def test_a_reader_that_goes_away_ends_a_command_quietly(workdir: Path) -> None:
    """`lethe audit export | head`: the pipe closes under the command, which stops without a traceback."""
    lethe(workdir, "project", "create", "acme")
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails with EPIPE
    try:
        done = subprocess.run([LETHE, "audit", "export"], cwd=workdir, env=env(), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_serve_listens_where_lethe_host_and_port_say_and_says_so(workdir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([LETHE, "serve"], cwd=workdir, env=env(LETHE_PORT=str(port), LETHE_HOST="127.0.0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert f"listening on http://127.0.0.1:{port} (SQL: sqlite:///" in output
    # the absolute folder in the form LETHE_CLICKHOUSE_URL takes it (chdb:/// then the absolute path)
    assert f"ClickHouse: chdb:///{workdir.resolve()}/var/clickhouse;" in output and "scheduler off" in output


def test_serve_on_a_taken_port_says_so_in_one_sentence(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = lethe(workdir, "serve", check=False, LETHE_PORT=str(port), LETHE_HOST="127.0.0.1")
    assert refused.returncode == 1 and "listening on" not in refused.stderr and "Traceback" not in refused.stderr
    assert f"lethe: cannot listen on 127.0.0.1:{port}: Address already in use" in refused.stderr


def test_a_job_run_as_of_a_future_instant_warns_that_it_erases_for_real(workdir: Path) -> None:
    lethe(workdir, "project", "create", "acme")
    future = lethe(workdir, "jobs", "run", "purge", "--now", "2099-01-01T00:00:00Z")
    assert "warning: --now is" in future.stderr and "days ahead of the clock" in future.stderr
    assert "warning" not in lethe(workdir, "jobs", "run", "purge").stderr


def test_projects_and_officers_are_listed_and_an_officer_revoked(workdir: Path) -> None:
    lethe(workdir, "project", "create", "acme")
    lethe(workdir, "project", "create", "beta")
    token = json.loads(lethe(workdir, "officer", "create", "olga", "--project", "acme", "--project", "beta")
                       .stdout)["token"]
    projects = json.loads(lethe(workdir, "project", "list").stdout)
    assert [(p["project"], p["status"]) for p in projects] == [("acme", "active"), ("beta", "active")]
    officers = json.loads(lethe(workdir, "officer", "list").stdout)
    assert [(o["officer"], o["projects"], o["revoked_at"]) for o in officers] == [("olga", ["acme", "beta"], None)]
    assert token not in lethe(workdir, "officer", "list").stdout  # tokens are shown once, at creation

    revoked = json.loads(lethe(workdir, "officer", "revoke", "olga").stdout)
    assert revoked["officer"] == "olga" and revoked["revoked_at"]
    assert json.loads(lethe(workdir, "officer", "list").stdout)[0]["revoked_at"] == revoked["revoked_at"]
    unknown = lethe(workdir, "officer", "revoke", "nobody", check=False)
    assert unknown.returncode == 1 and "officer 'nobody' not found" in unknown.stderr
    exported = lethe(workdir, "audit", "export").stdout
    assert [json.loads(line)["action"] for line in exported.splitlines()].count("officer.revoked") == 2


def test_webhook_secrets_are_rotated_and_auth_methods_chosen(workdir: Path) -> None:
    created = json.loads(lethe(workdir, "project", "create", "acme").stdout)
    assert created["webhook_secret"].startswith("whsec_") and created["webhook_url_path"].startswith("/v1/hooks/")
    rotated = lethe(workdir, "project", "rotate-webhook-secret", "acme")
    secret = json.loads(rotated.stdout)
    assert secret["project"] == "acme" and secret["webhook_secret"].startswith("whsec_")
    assert secret["webhook_secret"] != created["webhook_secret"] and "valid for 24 h" in rotated.stderr
    url = json.loads(lethe(workdir, "project", "rotate-webhook-url", "acme").stdout)
    assert url["webhook_url_path"].startswith("/v1/hooks/") and url["previous_valid_until"]
    chosen = json.loads(lethe(workdir, "project", "webhook-auth", "acme", "--allow", "signed,url").stdout)
    assert chosen == {"project": "acme", "webhook_auth": ["signed", "url"]}
    bad = lethe(workdir, "project", "webhook-auth", "acme", "--allow", "basic", check=False)
    assert bad.returncode == 1 and "unknown webhook auth method basic" in bad.stderr
    missing = lethe(workdir, "project", "rotate-webhook-secret", "nope", check=False)
    assert missing.returncode == 1 and "project 'nope' not found" in missing.stderr
    stored = (workdir / "var" / "lethe.db").read_bytes()  # sealed or hashed, never in plaintext
    shown = [created["webhook_secret"].removeprefix("whsec_"), secret["webhook_secret"].removeprefix("whsec_"),
             created["webhook_url_path"].removeprefix("/v1/hooks/"), url["webhook_url_path"].removeprefix("/v1/hooks/")]
    assert not [s for s in shown if s.encode() in stored]
    actions = [json.loads(line)["action"] for line in lethe(workdir, "audit", "export").stdout.splitlines()]
    assert actions == ["project.created", "project.webhook_secret_rotated", "project.webhook_url_rotated",
                       "project.webhook_auth_set"]


def test_ports_are_checked_and_a_taken_metrics_port_is_one_sentence(workdir: Path) -> None:
    import socket

    for argv in (["serve", "--port", "70000"], ["serve", "--port", "0"], ["worker", "--metrics-port", "-1"]):
        refused = lethe(workdir, *argv, check=False)
        assert refused.returncode == 2 and "a TCP port, 1 to 65535" in refused.stderr, argv
    early = lethe(workdir, "jobs", "run", "retention", "--now", "0001-01-01T00:00:00Z", check=False)
    assert early.returncode == 2 and "an instant between 1970 and 9000" in early.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = lethe(workdir, "worker", "--metrics-port", port, check=False)
    assert busy.returncode == 1 and f"cannot serve /metrics on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
