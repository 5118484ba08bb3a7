"""Run Alembic from code (`lethe migrate`, `lethe serve`, tests), wherever the CWD is."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

SOURCE = Path(__file__).resolve().parents[3]  # a checkout: alembic.ini and alembic/ at the top
INSTALLED = Path(sys.prefix) / "share" / "lethe"  # what the wheel installs (pyproject data-files)


def _root() -> Path:
    """Where alembic.ini and alembic/ are: the source tree, or the installed package's data."""
    for root in (SOURCE, INSTALLED):
        if (root / "alembic.ini").is_file() and (root / "alembic").is_dir():
            return root
    raise RuntimeError(f"Lethe's migrations are missing: neither {SOURCE} nor {INSTALLED} holds alembic.ini "
                       "and alembic/ (reinstall Lethe)")


def alembic_config() -> Config:
    root = _root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    return config


def upgrade(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_current(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
