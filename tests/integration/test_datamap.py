"""Every column of every table in both stores is classified in policies/ (GDPR Art. 30 record)."""

import tomllib
from pathlib import Path

import pytest

from app.domain.events import SEALED_COLUMNS
from app.domain.policy import PolicyError, datamap_problems, parse_datamap
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
    ({"datamap": {"event.value": {"p": {"category": "name", "erasure": "blank_on_anonymise"}}}}, "into = ..."),
    ({"datamap": {"event.value": {"p": {"category": "name", "into": "bio"}}}}, "unknown place 'bio'"),
    ({"datamap": {"event.value": {"p": {"category": "shoe size", "into": "extra"}}}}, "unknown category"),
    ({"datamap": {"event.value": {"p": {"category": "identifier", "into": "subject"}}}}, "name the actor"),
    ({"datamap": {"event.value": {"user_id": {"category": "identifier", "into": "extra"}}}}, "name the actor"),
])
def test_invalid_datamap_entries_are_named(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_datamap(doc, origin="default.toml")


def handlers() -> dict[str, frozenset[tuple[str, str, str]]]:
    from app.bootstrap import personal_data_handlers
    from app.stores.sql.erasure_steps import sql_steps

    return personal_data_handlers(sql_steps(None, None, None))  # type: ignore[arg-type]  # no store needed


def test_every_personal_column_has_a_handler_that_does_what_the_map_says(datamap) -> None:  # type: ignore[no-untyped-def]
    """The data map and the code agree both ways: a personal column that no handler erases (or
    one the map says is erased some other way) fails here, as does a handler declaring a column
    the map does not know. `lethe` refuses to start on such a map (test_a_map_the_code_does_not_match...)."""
    assert datamap_problems(datamap, handlers()) == []


def test_every_handling_the_map_names_has_a_handler(datamap) -> None:  # type: ignore[no-untyped-def]
    implemented = {erasure for handles in handlers().values() for _, _, erasure in handles}
    used = {entry.erasure for entry in datamap.values() if entry.personal and not entry.event_property}
    assert used <= implemented


def test_a_map_the_code_does_not_match_stops_lethe_with_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's map that says a profile's display name is kept until retention (no part of
    Lethe does that; the purge deletes it) is refused at start, naming both sides."""
    from app.cli import main
    from app.config import get_settings

    text = (ROOT / "policies" / "default.toml").read_text()
    changed = text.replace('display_name = { category = "name", erasure = "delete_on_purge" }',
                           'display_name = { category = "name", erasure = "retention" }')
    assert changed != text
    (tmp_path / "default.toml").write_text(changed)
    monkeypatch.setenv("LETHE_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("LETHE_DATABASE_URL", f"sqlite:///{tmp_path / 'lethe.db'}")
    get_settings.cache_clear()
    try:
        assert main(["policy", "check"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "sql.profiles.display_name: the data map says 'retention'" in err
    assert "sql.profiles.display_name: Lethe treats it as 'delete_on_purge'" in err


# --- the platform's event properties ---------------------------------------------------------
def reference_properties() -> dict[str, str]:
    """Every property the platform's event reference names (shared/seeds, as copied into
    tests/fixtures): each with one event type that carries it."""
    from tests.fixtures.platform import ADMIN, BACKEND, frontend
    from tests.http.test_canaries import frontend_reference

    found: dict[str, str] = {}
    for event, properties in frontend_reference().items():
        for key in frontend(event, **{p: "x" for p in properties})["value"]:
            found.setdefault(key, event)
    for envelope in BACKEND + ADMIN:
        for key in envelope["value"]:
            found.setdefault(key, envelope["event"])
    return found


def test_every_property_of_the_platforms_events_is_in_the_data_map(datamap) -> None:  # type: ignore[no-untyped-def]
    known = reference_properties()
    assert len(known) > 100, "the event reference was not read"
    mapped = {entry.column for entry in datamap.values() if entry.event_property}
    assert set(known) - mapped == set(), 'event properties missing from [datamap."event.value"]'


def test_each_event_property_goes_where_the_data_map_says(datamap) -> None:  # type: ignore[no-untyped-def]
    """The map drives the door: a canary in each mapped property of an event that carries it
    is found exactly where the entry says, and nowhere in plaintext."""
    from datetime import UTC, datetime

    from app.domain.events import EXTRA, OTHER_USER, SUBJECT, parse_envelope
    from app.domain.policy import property_map
    from tests.fixtures.platform import PROJECT

    properties = property_map(datamap)
    known = reference_properties()
    structural = {"project", "created_at", "event_name"}
    checked = 0
    for entry in datamap.values():
        key = entry.column
        if not entry.event_property or key in structural:
            continue
        canary = f"cnry-{key}"
        actor = {} if key in ("user_id", "external_user_id") else {"user_id": "someone"}
        value = {"project": PROJECT, **actor, key: canary}
        event = parse_envelope({"event": known.get(key, "custom_event"), "value": value}, PROJECT,
                               datetime(2026, 2, 1, tzinfo=UTC), properties, b"d" * 32)
        where = entry.into
        if where == SUBJECT:
            assert event.actor is not None and event.actor.user_id == canary, key
        elif where == OTHER_USER:
            assert event.user_refs[key] == (canary,), key
        elif where == EXTRA or where is None:  # not personal: stored as the code needs it, and sealed in extra
            assert canary in event.personal[EXTRA], key
        else:
            assert event.personal[where] == canary, key
            assert canary not in event.personal.get(EXTRA, ""), key
        checked += 1
    assert checked > 100


def test_without_an_entry_a_property_is_sealed_never_plaintext() -> None:
    """A missing or empty map costs structure (values land in `extra`), never confidentiality."""
    from datetime import UTC, datetime

    from app.domain.events import EXTRA, PropertyMap, parse_envelope
    from tests.fixtures.platform import PROJECT

    event = parse_envelope({"event": "session_started", "value": {"project": PROJECT, "user_id": "u-1",
                                                                  "user_name": "cnry-name"}},
                           PROJECT, datetime(2026, 2, 1, tzinfo=UTC), PropertyMap(), b"d" * 32)
    assert "cnry-name" in event.personal[EXTRA] and event.user_refs == {}


def test_a_policy_file_without_a_data_map_uses_lethes_own(tmp_path: Path) -> None:
    """Operators who only tune numbers keep the register that matches the code."""
    from app.services.policies import PolicyBook

    (tmp_path / "default.toml").write_text("[lifecycle]\ngrace_days = 14\n")
    book = PolicyBook.load(tmp_path)
    assert book.default.grace_days == 14
    assert book.datamap == parse_datamap(tomllib.loads((ROOT / "policies" / "default.toml").read_text()))
    assert datamap_problems(book.datamap, handlers()) == []
    assert book.properties.columns["user_agent"] == ("platformUserAgent",)


def test_an_event_property_section_that_is_not_a_table_is_named() -> None:
    with pytest.raises(PolicyError, match=r'datamap\."event\.value" must be a table'):
        parse_datamap({"datamap": {"event.value": "not_personal"}}, origin="default.toml")
