import stat
from pathlib import Path

import pytest

from app.config import ConfigError, load_settings


def test_defaults_are_embedded_and_relative_to_the_working_directory(tmp_path: Path) -> None:
    s = load_settings({}, cwd=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path}/var/lethe.db"
    assert s.clickhouse_url == f"chdb://{tmp_path}/var/clickhouse"
    assert s.embedded_clickhouse and s.scheduler
    assert s.policy_dir == tmp_path / "policies"


def test_secret_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_settings({}, cwd=tmp_path).secret_key
    key_file = tmp_path / "var" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings({}, cwd=tmp_path).secret_key == first
    assert len(first) == 64


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"LETHE_SCHEDULER=off\nLETHE_SECRET_KEY={'f' * 32}\n")
    assert load_settings({}, cwd=tmp_path).secret_key == b"f" * 32
    assert not load_settings({}, cwd=tmp_path).scheduler
    assert load_settings({"LETHE_SCHEDULER": "on"}, cwd=tmp_path).scheduler


def test_postgres_url_passes_through(tmp_path: Path) -> None:
    socket = load_settings({"LETHE_SECRET_KEY": "k" * 32,
                            "LETHE_DATABASE_URL": "postgresql+psycopg:///lethe?host=/var/run/postgresql"}, cwd=tmp_path)
    assert socket.database_url.endswith("?host=/var/run/postgresql")  # no host: the local socket
    url = "postgresql+psycopg://lethe@db/lethe"
    assert load_settings({"LETHE_DATABASE_URL": url, "LETHE_SECRET_KEY": "k" * 32}, cwd=tmp_path).database_url == url


def test_bad_scheduler_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LETHE_SCHEDULER"):
        load_settings({"LETHE_SCHEDULER": "maybe"}, cwd=tmp_path)


def test_callbacks_reach_private_networks_only_when_allowed(tmp_path: Path) -> None:
    assert not load_settings({}, cwd=tmp_path).callback_private_networks  # SSRF: denied by default
    assert load_settings({"LETHE_CALLBACK_PRIVATE_NETWORKS": "allow"}, cwd=tmp_path).callback_private_networks
    assert not load_settings({"LETHE_CALLBACK_PRIVATE_NETWORKS": "Deny"}, cwd=tmp_path).callback_private_networks
    with pytest.raises(ConfigError, match="LETHE_CALLBACK_PRIVATE_NETWORKS must be 'allow' or 'deny'"):
        load_settings({"LETHE_CALLBACK_PRIVATE_NETWORKS": "yes"}, cwd=tmp_path)


@pytest.mark.parametrize("key", ["", "   ", "short-key"])
def test_an_empty_or_short_secret_key_stops_with_one_sentence(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match="LETHE_SECRET_KEY must be at least 32 characters") as caught:
        load_settings({"LETHE_SECRET_KEY": key}, cwd=tmp_path)
    assert key.strip() == "" or key not in str(caught.value)


def test_an_empty_stored_secret_key_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.key").write_text("")
    with pytest.raises(ConfigError, match=r"secret\.key holds an empty or short key"):
        load_settings({}, cwd=tmp_path)


def test_the_embedded_stores_are_the_owners_only(tmp_path: Path) -> None:
    from sqlalchemy import text

    from app.stores.sql.engine import make_engine

    settings = load_settings({}, cwd=tmp_path)
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    var = tmp_path / "var"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in var.iterdir()}
    engine.dispose()
    assert modes["lethe.db"] == 0o600 and modes["lethe.db-wal"] == 0o600 and modes["secret.key"] == 0o600
    assert modes["clickhouse"] == 0o700 and stat.S_IMODE(var.stat().st_mode) == 0o700


def test_a_clickhouse_cluster_name_is_checked_and_needs_a_server(tmp_path: Path) -> None:
    server = {"LETHE_SECRET_KEY": "k" * 32, "LETHE_CLICKHOUSE_URL": "http://ch:8123/lethe"}
    assert load_settings({**server, "LETHE_CLICKHOUSE_CLUSTER": "lethe_cluster"}, tmp_path).clickhouse_cluster == \
        "lethe_cluster"
    assert load_settings(server, tmp_path).clickhouse_cluster is None
    with pytest.raises(ConfigError, match="cluster name"):
        load_settings({**server, "LETHE_CLICKHOUSE_CLUSTER": "x'); DROP"}, tmp_path)
    with pytest.raises(ConfigError, match="needs a ClickHouse server"):
        load_settings({"LETHE_SECRET_KEY": "k" * 32, "LETHE_CLICKHOUSE_CLUSTER": "c"}, tmp_path)


def test_on_a_cluster_the_ddl_uses_replicated_engines_in_a_replicated_database() -> None:
    from app.stores.clickhouse.client import replicated_database
    from app.stores.clickhouse.schema import MIGRATIONS, for_cluster

    ddl = [for_cluster(statement, "c1") for _, _, statements in MIGRATIONS for statement in statements]
    assert "ENGINE = ReplicatedMergeTree\n" in ddl[0] and "ENGINE = ReplicatedReplacingMergeTree(computed_at)" in ddl[1]
    assert not any("ENGINE = MergeTree" in s or "ENGINE = ReplacingMergeTree" in s for s in ddl)
    assert [for_cluster(s, None) for _, _, statements in MIGRATIONS for s in statements] == \
        [s for _, _, statements in MIGRATIONS for s in statements]  # one server: the DDL as released
    assert replicated_database("lethe", "c1") == \
        " ENGINE = Replicated('/clickhouse/databases/c1/lethe', '{shard}', '{replica}')"
    assert replicated_database("lethe", None) == ""


@pytest.mark.parametrize(("env", "message"), [
    ({"LETHE_DATABASE_URL": "mysql://u@h/db"}, "LETHE_DATABASE_URL must be a SQLite or PostgreSQL URL"),
    ({"LETHE_DATABASE_URL": "not a url"}, "LETHE_DATABASE_URL must be a SQLite or PostgreSQL URL"),
    ({"LETHE_DATABASE_URL": "sqlite:////nonexistent/dir/x.db"}, "/nonexistent/dir, which is not an existing folder"),
    ({"LETHE_CLICKHOUSE_URL": "bogus://x"}, "LETHE_CLICKHOUSE_URL must be chdb:///relative/folder"),
    ({"LETHE_CLICKHOUSE_URL": "notaurl"}, "LETHE_CLICKHOUSE_URL must be chdb:///relative/folder"),
    ({"LETHE_CLICKHOUSE_URL": "http://"}, "LETHE_CLICKHOUSE_URL must be chdb:///relative/folder"),
    ({"LETHE_CLICKHOUSE_URL": "chdb:////proc/forbidden"},
     "LETHE_CLICKHOUSE_URL: cannot create the folder /proc/forbidden"),
    ({"LETHE_DATABASE_URL": "postgresql+psycopg://u:Sup3rSecret@host:notaport/db"},
     "LETHE_DATABASE_URL: the server's host or port cannot be read"),
    ({"LETHE_DATABASE_URL": "postgresql+psycopg://u@[::1/db"}, "LETHE_DATABASE_URL: the server's host or port"),
    ({"LETHE_CLICKHOUSE_URL": "https://u:Sup3rSecret@[::1/db"}, "LETHE_CLICKHOUSE_URL: the server's host or port"),
    ({"LETHE_CLICKHOUSE_URL": "http://u:pw@localhost:99999/db"}, "LETHE_CLICKHOUSE_URL: the server's host or port"),
])
def test_a_store_url_lethe_cannot_use_stops_with_one_sentence(tmp_path: Path, env: dict[str, str],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_settings({"LETHE_SECRET_KEY": "k" * 32, **env}, cwd=tmp_path)
    assert "Sup3rSecret" not in str(refused.value)  # a URL's password is never repeated


def test_an_absolute_chdb_folder_is_created_and_engine_options_stay_on_the_url(tmp_path: Path) -> None:
    url = load_settings({"LETHE_SECRET_KEY": "k" * 32,
                         "LETHE_CLICKHOUSE_URL": f"chdb:///{tmp_path}/ch/data?background_pool_size=8"},
                        cwd=tmp_path).clickhouse_url
    assert url == f"chdb://{tmp_path}/ch/data?background_pool_size=8"
    assert (tmp_path / "ch" / "data").is_dir() and stat.S_IMODE((tmp_path / "ch" / "data").stat().st_mode) == 0o700
