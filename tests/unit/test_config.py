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
    (tmp_path / ".env").write_text("LETHE_SCHEDULER=off\nLETHE_SECRET_KEY=from-file\n")
    assert load_settings({}, cwd=tmp_path).secret_key == b"from-file"
    assert not load_settings({}, cwd=tmp_path).scheduler
    assert load_settings({"LETHE_SCHEDULER": "on"}, cwd=tmp_path).scheduler


def test_postgres_url_passes_through(tmp_path: Path) -> None:
    url = "postgresql+psycopg://lethe@db/lethe"
    assert load_settings({"LETHE_DATABASE_URL": url, "LETHE_SECRET_KEY": "k"}, cwd=tmp_path).database_url == url


def test_bad_scheduler_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LETHE_SCHEDULER"):
        load_settings({"LETHE_SCHEDULER": "maybe"}, cwd=tmp_path)
