"""Every column of every table in both stores is classified in policies/ (GDPR Art. 30 record)."""

import tomllib
from pathlib import Path

import pytest

from app.domain.events import SEALED_COLUMNS
from app.domain.policy import PolicyError, parse_datamap
from app.models import Base
from app.stores.clickhouse.client import ClickHouse

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def datamap():  # type: ignore[no-untyped-def]
    return parse_datamap(tomllib.loads((ROOT / "policies" / "default.toml").read_text()))


def test_every_sql_column_is_classified_and_nothing_else(datamap) -> None:  # type: ignore[no-untyped-def]
    actual = {("sql", t.name, c.name) for t in Base.metadata.sorted_tables for c in t.columns}
    mapped = {k for k in datamap if k[0] == "sql"}
    assert actual - mapped == set(), "unclassified SQL columns: add them to policies/default.toml [datamap]"
    assert mapped - actual == set(), "the data map names SQL columns that do not exist"


def test_every_clickhouse_column_is_classified(datamap, clickhouse: ClickHouse) -> None:  # type: ignore[no-untyped-def]
    tables = clickhouse.rows("SELECT table, name FROM system.columns WHERE database = currentDatabase() "
                             "AND table != 'schema_versions'")
    actual = {("clickhouse", t, c) for t, c in tables}
    mapped = {k for k in datamap if k[0] == "clickhouse"}
    assert actual - mapped == set(), "unclassified ClickHouse columns: add them to policies/default.toml"
    assert mapped - actual == set(), "the data map names ClickHouse columns that do not exist"


def test_the_columns_erasure_blanks_are_the_ones_marked_so(datamap) -> None:  # type: ignore[no-untyped-def]
    blanked = {k[2] for k, col in datamap.items() if k[:2] == ("clickhouse", "events")
               and col.erasure == "blank_on_anonymise"}
    assert blanked == set(SEALED_COLUMNS)


@pytest.mark.parametrize(("doc", "message"), [
    ({"datamap": {"sql.t": {"c": "personal"}}}, "must be"),
    ({"datamap": {"sql.t": {"c": {"category": "name", "erasure": "burn"}}}}, "unknown erasure"),
    ({"datamap": {"sql.t": {"c": {"category": "shoe size", "erasure": "manual"}}}}, "unknown category"),
    ({"datamap": {"redis.t": {"c": "not_personal"}}}, "sql.<t>"),
])
def test_invalid_datamap_entries_are_named(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_datamap(doc, origin="default.toml")


def handlers() -> dict[str, frozenset[tuple[str, str, str]]]:
    """Every piece of code that declares what it does to personal data, by name: the erasure's
    registered SQL steps, and the stores and services that keep or expire the rest."""
    from app.services.accounts import AccountService
    from app.services.callbacks import CallbackService
    from app.services.deletion import DeletionService
    from app.services.holds import HoldService
    from app.services.outbox import OutboxService
    from app.services.retention import RetentionService
    from app.stores.clickhouse.events import ClickHouseEventStore
    from app.stores.sql.audit_log import AuditLog
    from app.stores.sql.erasure_steps import sql_steps
    from app.stores.sql.subjects import Subjects

    steps = sql_steps(None, None, None)  # type: ignore[arg-type]  # what erasure runs; no store needed here
    found = {f"{type(step).__name__}:{step.name}": step.handles for step in steps}  # type: ignore[attr-defined]
    found.update({cls.__name__: cls.handles for cls in (ClickHouseEventStore, Subjects, AuditLog, AccountService,
                                                          DeletionService, HoldService, RetentionService,
                                                          CallbackService, OutboxService)})
    return found


def test_every_personal_column_has_a_handler_that_does_what_the_map_says(datamap) -> None:  # type: ignore[no-untyped-def]
    """The data map and the code agree both ways: a personal column that no handler erases (or
    one the map says is erased some other way) fails here, as does a handler declaring a column
    the map does not know."""
    declared = {h for handles in handlers().values() for h in handles}
    mapped = {(f"{store}.{table}", column, entry.erasure) for (store, table, column), entry in datamap.items()
              if entry.personal}
    assert mapped - declared == set(), "personal data no handler takes care of (as the data map says)"
    assert declared - mapped == set(), "handlers declaring data the map does not list (or lists otherwise)"


def test_every_handling_the_map_names_has_a_handler(datamap) -> None:  # type: ignore[no-untyped-def]
    implemented = {erasure for handles in handlers().values() for _, _, erasure in handles}
    used = {entry.erasure for entry in datamap.values() if entry.personal}
    assert used <= implemented
