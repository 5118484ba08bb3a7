"""Settings from LETHE_* environment variables (a `.env` file may supply them; the environment wins)."""

from __future__ import annotations

import os
import re
import secrets
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

DEFAULTS = {
    "LETHE_DATABASE_URL": "sqlite:///var/lethe.db",
    "LETHE_CLICKHOUSE_URL": "chdb:///var/clickhouse",
    "LETHE_POLICY_DIR": "policies",
    "LETHE_SCHEDULER": "on",
    "LETHE_HOST": "127.0.0.1",
    "LETHE_PORT": "8000",
    "LETHE_OUTBOX_MAX_EVENTS": "1000000",
    "LETHE_LOG_LEVEL": "info",
}
LOG_LEVELS = ("debug", "info", "warning", "error")


MIN_SECRET = 32  # characters; the generated key has 64 (hex of 32 random bytes)


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    clickhouse_url: str
    policy_dir: Path
    secret_key: bytes
    scheduler: bool
    host: str = "127.0.0.1"
    port: int = 8000
    # events waiting for ClickHouse past which webhook calls get 503 + Retry-After (backpressure)
    outbox_max_events: int = 1_000_000
    log_level: str = "info"  # debug | info | warning | error
    clickhouse_cluster: str | None = None  # a ClickHouse cluster's name: replicated database and tables
    # Redis for the rate limits' counters, shared by every API process (None: each process counts alone)
    rate_limit_url: str | None = None
    # signed heads of the audit chain, kept outside the SQL store (CONTRACT: `lethe audit checkpoint`)
    audit_checkpoints: Path = Path("var/audit-checkpoints.jsonl")
    # callbacks may go to loopback, private and link-local addresses (a partner's receiver on
    # this deployment's own network); off, such URLs are refused (SSRF)
    callback_private_networks: bool = False

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb:")


def load_settings(environ: dict[str, str] | None = None, cwd: Path | None = None) -> Settings:
    cwd = cwd or Path.cwd()
    env_file = {k: v for k, v in dotenv_values(cwd / ".env").items() if v is not None}
    values = {**DEFAULTS, **env_file, **(os.environ if environ is None else environ)}
    scheduler = values["LETHE_SCHEDULER"].strip().lower()
    if scheduler not in {"on", "off"}:
        raise ConfigError(f"LETHE_SCHEDULER must be 'on' or 'off', got {scheduler!r}")
    key = values.get("LETHE_SECRET_KEY")
    port = values["LETHE_PORT"].strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"LETHE_PORT must be a TCP port number (1-65535), got {port!r}")
    outbox_max = values["LETHE_OUTBOX_MAX_EVENTS"].strip()
    if not outbox_max.isdigit() or int(outbox_max) < 1:
        raise ConfigError(f"LETHE_OUTBOX_MAX_EVENTS must be a positive number of events, got {outbox_max!r}")
    log_level = values["LETHE_LOG_LEVEL"].strip().lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LETHE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    cluster = values.get("LETHE_CLICKHOUSE_CLUSTER", "").strip() or None
    if cluster is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,64}", cluster):
        raise ConfigError(f"LETHE_CLICKHOUSE_CLUSTER must be a cluster name (letters, digits, _), got {cluster!r}")
    if cluster is not None and values["LETHE_CLICKHOUSE_URL"].startswith("chdb:"):
        raise ConfigError("LETHE_CLICKHOUSE_CLUSTER needs a ClickHouse server (LETHE_CLICKHOUSE_URL=http://...), "
                          "not the embedded engine")
    rate_limit_url = values.get("LETHE_RATE_LIMIT_URL", "").strip() or None
    if rate_limit_url is not None and not rate_limit_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("LETHE_RATE_LIMIT_URL must be a Redis URL (redis://host:6379/0, rediss://... or "
                          "unix:///path), or empty to count in each process")
    private_networks = values.get("LETHE_CALLBACK_PRIVATE_NETWORKS", "deny").strip().lower() or "deny"
    if private_networks not in {"allow", "deny"}:
        raise ConfigError(f"LETHE_CALLBACK_PRIVATE_NETWORKS must be 'allow' or 'deny', got {private_networks!r}")
    return Settings(
        database_url=_resolve_sqlite(values["LETHE_DATABASE_URL"], cwd),
        clickhouse_url=_resolve_chdb(values["LETHE_CLICKHOUSE_URL"], cwd),
        policy_dir=_policy_dir(values["LETHE_POLICY_DIR"], cwd, explicit="LETHE_POLICY_DIR" in env_file
                               or "LETHE_POLICY_DIR" in (os.environ if environ is None else environ)),
        secret_key=_secret(key, cwd / "var" / "secret.key"),
        scheduler=scheduler == "on",
        host=values["LETHE_HOST"].strip(),
        port=int(port),
        outbox_max_events=int(outbox_max),
        log_level=log_level,
        clickhouse_cluster=cluster,
        rate_limit_url=rate_limit_url,
        audit_checkpoints=cwd / "var" / "audit-checkpoints.jsonl",
        callback_private_networks=private_networks == "allow",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def _policy_dir(configured: str, cwd: Path, *, explicit: bool) -> Path:
    """LETHE_POLICY_DIR, relative to the working directory. Left unset, and with no `policies/`
    here, an installed Lethe uses the policies its wheel ships (<prefix>/share/lethe/policies)."""
    chosen = cwd / configured
    installed = Path(sys.prefix) / "share" / "lethe" / "policies"
    if not explicit and not chosen.exists() and installed.is_dir():
        return installed
    return chosen


def _resolve_sqlite(url: str, cwd: Path) -> str:
    """`sqlite:///rel/path` is relative to the working directory (its folder is created);
    `sqlite:////abs/path` is absolute (its folder must exist). PostgreSQL URLs pass as they are."""
    scheme = url.partition("://")[0].partition("+")[0]
    if scheme not in ("sqlite", "postgresql") or "://" not in url:
        raise ConfigError("LETHE_DATABASE_URL must be a SQLite or PostgreSQL URL (sqlite:///var/lethe.db, "
                          f"postgresql+psycopg://user@host/db), got one starting {url.partition(':')[0][:20]!r}")
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        _check_netloc("LETHE_DATABASE_URL", url, "postgresql+psycopg://user:password@db.example:5432/lethe",
                      needs_host=False)
        return url
    if url.startswith(prefix + "/"):
        folder = Path(url[len(prefix):].split("?", 1)[0]).parent
        if not folder.is_dir():
            raise ConfigError(f"LETHE_DATABASE_URL names a file in {folder}, which is not an existing folder")
        return url
    path = cwd / url[len(prefix):]
    _folder("LETHE_DATABASE_URL", path.parent)
    return prefix + str(path)


def _resolve_chdb(url: str, cwd: Path) -> str:
    """`chdb:///rel/path` is relative (as in SQLAlchemy's sqlite URLs); `chdb:////abs` is absolute.
    Its folder is created, readable by the owner only (it holds ciphertext and pseudonyms)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("http", "https") and rest.strip("/"):
        _check_netloc("LETHE_CLICKHOUSE_URL", url, "https://user:password@clickhouse.example:8443/lethe",
                      needs_host=True)
        return url
    if scheme != "chdb" or not rest.startswith("/"):
        raise ConfigError("LETHE_CLICKHOUSE_URL must be chdb:///relative/folder, chdb:////absolute/folder or a "
                          "ClickHouse server's http(s)://user:password@host:8123/database")
    path = cwd / rest[1:].split("?", 1)[0]  # an absolute path stays absolute
    _folder("LETHE_CLICKHOUSE_URL", path)
    path.chmod(0o700)
    return "chdb://" + str(path) + ("?" + url.split("?", 1)[1] if "?" in url else "")


def _check_netloc(setting: str, url: str, example: str, *, needs_host: bool) -> None:
    """A server URL's host and port must parse (`host:notaport`, `[::1` do not); PostgreSQL may
    leave the host out (the local socket). The message never repeats the URL: it may hold a
    password."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        if needs_host and not parts.hostname:
            raise ValueError("no host")
    except ValueError:
        raise ConfigError(f"{setting}: the server's host or port cannot be read (e.g. {example})") from None


def _folder(setting: str, path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot create the folder {path} ({exc.strerror})") from None


def _secret(configured: str | None, stored: Path) -> bytes:
    """LETHE_SECRET_KEY, or the key generated once into var/secret.key. An empty or short key
    stops everything: every data key, token hash and audit hash derives from it."""
    if configured is not None:
        if len(configured.strip()) < MIN_SECRET:
            raise ConfigError(f"LETHE_SECRET_KEY must be at least {MIN_SECRET} characters "
                              "(generate one with `openssl rand -hex 32`)")
        return configured.encode()  # as given: every key derives from it, byte for byte
    secret = _stored_secret(stored)
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"{stored} holds an empty or short key: restore it from your backup (a new key "
                          "cannot read the data already stored), or set LETHE_SECRET_KEY")
    return secret


def _stored_secret(path: Path) -> bytes:
    """The key generated once into var/secret.key (mode 0600) when LETHE_SECRET_KEY is unset."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_bytes().strip()
