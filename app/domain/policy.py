"""Policy value objects, parsed from the TOML files in `policies/` (pure: no file I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from app.domain.events import ACTOR_KEYS, OTHER_USER, SEALED_COLUMNS, SUBJECT, PropertyMap


class PolicyError(ValueError):
    """A policy document is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Policy:
    grace_days: int = 30
    retention_months: int = 13
    message_feed_days: int = 30
    dead_letter_retention_days: int = 30
    store_ip: bool = False
    hold_release_delay_hours: int = 0
    suppress_after_erasure_days: int = 30  # a purged user's late events are dropped this long (0: off)


_LIFECYCLE_KEYS = {f.name: f.type for f in fields(Policy)}


def parse_policy(doc: Mapping[str, Any], base: Policy | None = None, *, origin: str = "policy") -> Policy:
    """Read the `[lifecycle]` table of a policy document over `base` (the defaults)."""
    base = base or Policy()
    section = doc.get("lifecycle", {})
    if not isinstance(section, Mapping):
        raise PolicyError(f"{origin}: [lifecycle] must be a table")
    values = {f.name: getattr(base, f.name) for f in fields(Policy)}
    for key, value in section.items():
        if key not in _LIFECYCLE_KEYS:
            raise PolicyError(f"{origin}: unknown key lifecycle.{key}")
        expected = bool if _LIFECYCLE_KEYS[key] == "bool" else int
        if type(value) is not expected:
            raise PolicyError(f"{origin}: lifecycle.{key} must be {expected.__name__}, got {value!r}")
        if expected is int and value < 0:
            raise PolicyError(f"{origin}: lifecycle.{key} must not be negative")
        values[key] = value
    return Policy(**values)


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests per second allowed to one credential, by role (`[limits]`, default policy only:
    the API enforces them before any project is known). Over the limit: 429 + Retry-After."""

    partner_requests_per_second: int = 100
    webhook_requests_per_second: int = 5000  # the platform sends single events at thousands/s
    officer_requests_per_second: int = 50


def parse_limits(doc: Mapping[str, Any], *, origin: str = "policy") -> Limits:
    section = doc.get("limits", {})
    if not isinstance(section, Mapping):
        raise PolicyError(f"{origin}: [limits] must be a table")
    known = {f.name for f in fields(Limits)}
    for key, value in section.items():
        if key not in known:
            raise PolicyError(f"{origin}: unknown key limits.{key}")
        if type(value) is not int or value < 1:
            raise PolicyError(f"{origin}: limits.{key} must be a positive integer, got {value!r}")
    return Limits(**dict(section))


CATEGORIES = frozenset({
    "pseudonym", "identifier", "name", "image", "activity", "content", "network", "device", "browsing",
    "raw_payload", "payload_hash", "keyed_hash", "free_text", "staff_name", "pseudonymised_properties",
})
ERASURES = frozenset({
    "unlinked_on_purge", "null_on_purge", "delete_on_purge", "delete_on_anonymise", "blank_on_anonymise",
    "kept_anonymous", "kept_anonymous_deleted_if_immediate", "kept_as_legal_record", "retention", "manual",
    "key_destroyed_when_delivered", "drained_before_erasure", "kept_while_held",
})
# A handler declares what it does to which personal data: ("<store>.<table>", column, erasure).
# tests/integration/test_datamap.py checks the data map and the handlers against each other.
Handles = frozenset[tuple[str, str, str]]


@dataclass(frozen=True, slots=True)
class Column:
    store: str  # "sql" | "clickhouse" | "event" (a property of the platform's events, table "value")
    table: str
    column: str
    category: str | None  # None: not personal
    erasure: str | None
    into: str | None = None  # an event property's place (see domain.events.PropertyMap)

    @property
    def personal(self) -> bool:
        return self.category is not None

    @property
    def event_property(self) -> bool:
        """A property of the platform's events (`[datamap."event.value"]`), not a stored column."""
        return f"{self.store}.{self.table}" == EVENT_PROPERTIES


# The platform's event properties (keys of an envelope's `value`): where each goes, and so how
# it is erased. `{ category, into }`, into: a sealed column of clickhouse.events (erased with
# the subject's analytics key), "extra" (sealed likewise, with every unmapped property),
# "properties" (another user, stored as a subject id), or "subject" (the actor).
EVENT_PROPERTIES = "event.value"
_INTO_ERASURE = {**{column: "blank_on_anonymise" for column in SEALED_COLUMNS},
                 OTHER_USER: "unlinked_on_purge", SUBJECT: "unlinked_on_purge"}


def _event_property(key: str, spec: Any, where: str) -> Column:
    if not isinstance(spec, Mapping) or set(spec) != {"category", "into"}:
        raise PolicyError(f'{where} must be "not_personal" or {{ category = ..., into = ... }}')
    if spec["category"] not in CATEGORIES:
        raise PolicyError(f"{where}: unknown category {spec['category']!r}")
    into = spec["into"]
    if into not in _INTO_ERASURE:
        raise PolicyError(f"{where}: unknown place {into!r} (one of: {', '.join(sorted(_INTO_ERASURE))})")
    if (into == SUBJECT) != (key in ACTOR_KEYS):
        raise PolicyError(f'{where}: only {" and ".join(ACTOR_KEYS)} name the actor ("subject")')
    store, _, table = EVENT_PROPERTIES.partition(".")
    return Column(store, table, key, spec["category"], _INTO_ERASURE[into], into)


def datamap_problems(datamap: Mapping[tuple[str, str, str], Column], handlers: Mapping[str, Handles]) -> list[str]:
    """Where the data map and the code disagree, one sentence each (empty: they agree). Every
    part of Lethe that erases, keeps or expires personal data declares what it does as
    `handles`; each personal column of the map must be handled as the map says, and nothing may
    be handled that the map does not list so. (Event properties are checked apart: their place
    decides their handling.)"""
    declared = {entry for handles in handlers.values() for entry in handles}
    mapped = {(f"{c.store}.{c.table}", c.column, c.erasure or "") for c in datamap.values()
              if c.personal and not c.event_property}
    return ([f"{table}.{column}: the data map says {erasure!r}, and no part of Lethe does that"
             for table, column, erasure in sorted(mapped - declared)]
            + [f"{table}.{column}: Lethe treats it as {erasure!r}, and the data map does not say so"
               for table, column, erasure in sorted(declared - mapped)])


def property_map(datamap: Mapping[tuple[str, str, str], Column]) -> PropertyMap:
    """The event properties' part of the data map, as the ingest reads it."""
    return PropertyMap.of({c.column: c.into for c in datamap.values()
                           if c.event_property and c.into})


def parse_datamap(doc: Mapping[str, Any], *, origin: str = "policy") -> dict[tuple[str, str, str], Column]:
    """The `[datamap."store.table"]` tables: every column, personal or not (GDPR Art. 30)."""
    section = doc.get("datamap", {})
    if not isinstance(section, Mapping):
        raise PolicyError(f"{origin}: [datamap] must be a table")
    columns: dict[tuple[str, str, str], Column] = {}
    for qualified, table in section.items():
        store, _, name = qualified.partition(".")
        known = qualified == EVENT_PROPERTIES or (store in {"sql", "clickhouse"} and bool(name))
        if not known or not isinstance(table, Mapping):
            raise PolicyError(f'{origin}: datamap."{qualified}" must be a table named "sql.<t>" or "clickhouse.<t>" '
                              f'(or "{EVENT_PROPERTIES}")')
        for column, spec in table.items():
            where = f'{origin}: datamap."{qualified}".{column}'
            if spec == "not_personal":
                columns[(store, name, column)] = Column(store, name, column, None, None)
                continue
            if qualified == EVENT_PROPERTIES:
                columns[(store, name, column)] = _event_property(column, spec, where)
                continue
            if not isinstance(spec, Mapping) or set(spec) != {"category", "erasure"}:
                raise PolicyError(f'{where} must be "not_personal" or {{ category = ..., erasure = ... }}')
            if spec["category"] not in CATEGORIES:
                raise PolicyError(f"{where}: unknown category {spec['category']!r}")
            if spec["erasure"] not in ERASURES:
                raise PolicyError(f"{where}: unknown erasure {spec['erasure']!r}")
            columns[(store, name, column)] = Column(store, name, column, spec["category"], spec["erasure"])
    return columns
