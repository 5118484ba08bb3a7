"""The Alembic migrations and the SQLAlchemy models describe the same schema, on both dialects."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

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
