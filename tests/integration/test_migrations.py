"""The Alembic migrations and the SQLAlchemy models describe the same schema, on both dialects."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

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
