"""The Alembic migrations and the SQLAlchemy models describe the same schema, on both dialects."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from app.models import Base
from app.stores.sql import migrations


def test_models_and_migrations_do_not_differ(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models differ from migrations; run `alembic revision --autogenerate`: {diff}"


def test_database_is_at_head_and_upgrade_is_idempotent(engine: Engine) -> None:
    assert migrations.is_current(engine)
    migrations.upgrade(engine)
    assert migrations.is_current(engine)


def test_primary_keys_match_the_models_column_for_column(engine: Engine) -> None:
    """Autogenerate does not compare primary keys, and their column order is the tables'
    physical order (data_keys: purpose first, so one purpose's keys share pages)."""
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        wanted = [column.name for column in table.primary_key.columns]
        assert inspector.get_pk_constraint(table.name)["constrained_columns"] == wanted, table.name


def test_often_updated_tables_leave_room_for_in_place_updates_on_postgresql(engine: Engine) -> None:
    """Subjects (last activity, status) and requests (every step) keep 10 % of each page free,
    so an update of unindexed columns stays on its page (HOT) and leaves the indexes alone."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL storage parameter")
    with engine.connect() as conn:
        options = dict(conn.execute(text("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                                         "('subjects', 'deletion_requests', 'audit_log')")).all())
    assert options == {"subjects": ["fillfactor=90"], "deletion_requests": ["fillfactor=90"], "audit_log": None}
