"""Every column of every table in both stores is classified in policies/ (GDPR Art. 30 record)."""

import tomllib
from pathlib import Path

import pytest

from app.domain.events import SEALED_COLUMNS
from app.domain.policy import PolicyError, parse_datamap
from app.stores.clickhouse.client import ClickHouse
from app.stores.sql.models import Base

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
