"""The platform's webhook envelopes, validated and split into what Lethe stores (pure).

"Pseudonymise at the door": the acting user and every other user an event names are pulled
out of `value` (the service swaps them for subject ids), and the personal values an event
carries go to their own columns, sealed at the door. The rest of `value` is sealed too, as one
JSON column (`extra`): only the other users it names stay readable, as subject ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from app.domain.requests import add_months

MAX_BATCH = 1000
DEDUP_LABEL = b"lethe/event-dedup"  # the key of envelopes' dedup keys, derived from LETHE_SECRET_KEY
MAX_DEPTH = 32  # nesting of objects and arrays inside one envelope
MAX_ENVELOPE_CHARS = 64 * 1024  # one envelope's canonical JSON
MAX_ID = 200  # user, message and room ids: the width of their SQL columns
MAX_REPORT_TYPE = 100
FUTURE_SLACK = timedelta(days=1)  # platform clocks run a little ahead; a year-9999 event never

# The events table's columns for personal values (its schema), each sealed under a key of its
# subject. Which properties of `value` go into which is the data map's to say (PropertyMap).
PERSONAL_SEALED: tuple[str, ...] = ("user_name", "nickname", "decrypted_user_id", "text", "source_url",
                                    "user_agent", "ip", "url")
# Every other key of `value` (the event's unknown and structural properties) goes, as one JSON
# object, to this column, sealed like the personal ones: what an unknown property holds cannot
# be known, so none is ever stored in plaintext. Only the other users an event names stay
# readable in `properties`, as subject ids.
EXTRA = "extra"
SEALED_COLUMNS: tuple[str, ...] = (*PERSONAL_SEALED, EXTRA)
# Where else a property can go: it names the actor (replaced by the actor's subject id), or
# another user (replaced by that user's subject id, in the `properties` column).
SUBJECT = "subject"
OTHER_USER = "properties"
ACTOR_KEYS = ("user_id", "external_user_id")  # frontend and admin `user_id`, backend `external_user_id`
_IDENTITY_KEYS = frozenset({*ACTOR_KEYS, "project", "created_at", "event_name"})


@dataclass(frozen=True, slots=True)
class PropertyMap:
    """Where the known properties of an event's `value` go: built from the data map
    (`[datamap."event.value"]` in policies/default.toml), the one register of personal data.

    A property the map sends to a sealed column is read into it (the first present, in map
    order, when several feed one column); one it calls another user becomes a subject id in
    `properties`, as does any `*user_ids` / `*UserIds` list. Everything else, known or not, is
    sealed in `extra`: no entry, and no missing entry, can make a value plaintext."""

    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # sealed column -> keys, in order
    user_refs: frozenset[str] = frozenset()

    @classmethod
    def of(cls, into: Mapping[str, str]) -> PropertyMap:
        """From `{property: where}` in map order; where is a PERSONAL_SEALED column, OTHER_USER,
        SUBJECT or EXTRA (the last two need no table: ACTOR_KEYS name the actor, the rest is extra)."""
        columns: dict[str, list[str]] = {}
        for key, where in into.items():
            if where in PERSONAL_SEALED:
                columns.setdefault(where, []).append(key)
        return cls({column: tuple(keys) for column, keys in columns.items()},
                   frozenset(key for key, where in into.items() if where == OTHER_USER))

    def names_users(self, key: str) -> bool:
        """A value key naming other users: the mapped ones, and any `*user_ids` / `*UserIds` list."""
        return key in self.user_refs or key.lower().replace("_", "").endswith("userids")


class EnvelopeError(ValueError):
    """The envelope cannot be stored; the message says what is wrong (it names no values)."""


# Admins have their own namespace of subjects. A chat user's key is the platform's user id as
# it is; an admin's starts with a NUL, which no id can hold (events and API calls that carry
# one are refused at the door), so no chat user id can ever name an admin: a chat user called
# "admin:42" is not admin 42.
ADMIN_PREFIX = "\x00admin:"
LEGACY_ADMIN_PREFIX = "admin:"  # the prefix before that, which a chat user id could imitate


def is_admin_key(key: str) -> bool:
    """A subject's user key (Actor.key) that names a platform admin, not a chat user."""
    return key.startswith(ADMIN_PREFIX)


def platform_user_id(key: str) -> str:
    """The id the platform itself uses for the person behind a user key (the prefix removed)."""
    return key.removeprefix(ADMIN_PREFIX)


def shown_user_id(key: str) -> str:
    """A user key as responses show it: a chat user's id as it is, an admin as `admin:<id>`."""
    return f"admin:{platform_user_id(key)}" if is_admin_key(key) else key


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a chat user (frontend `user_id` or backend `external_user_id`) or an admin."""

    kind: str  # "user" | "admin"
    user_id: str

    @property
    def key(self) -> str:
        """How the actor is looked up in `subjects`: admins get their own namespace."""
        return self.user_id if self.kind == "user" else f"{ADMIN_PREFIX}{self.user_id}"


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    at: datetime
    actor: Actor | None
    personal: Mapping[str, str]  # column -> value, for the columns in SEALED_COLUMNS (extra: JSON)
    user_refs: Mapping[str, tuple[str, ...]]  # value key -> user ids of other users (one, or a list)
    dedup_key: str  # keyed hash (HMAC-SHA256) of the canonical envelope: a repeated delivery has one effect
    room_id: str = ""
    message_id: str = ""
    platform: str = ""
    raw_value: Mapping[str, Any] = field(default_factory=dict)


def parse_envelope(envelope: Any, project: str, received_at: datetime, properties: PropertyMap,
                   dedup_secret: bytes) -> Event:
    """One envelope as an Event. `dedup_secret` keys the envelope's dedup key (DEDUP_LABEL): a
    plain hash of the envelope, stored for 13 months, would give back what it hashes to anyone
    who guesses it (a login's IP among 2^32, an erased user's id)."""
    if not isinstance(envelope, Mapping):
        raise EnvelopeError("an envelope must be a JSON object with `event` and `value`")
    check_storable(envelope)
    name = envelope.get("event")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise EnvelopeError("`event` must be a non-empty string of at most 100 characters")
    value = envelope.get("value")
    if not isinstance(value, Mapping):
        raise EnvelopeError("`value` must be a JSON object")
    if value.get("project") != project:
        raise EnvelopeError("`value.project` must be the project this webhook token belongs to")
    at = _event_time(value.get("created_at"), received_at)
    if name == "report_sent":
        report_type(value)  # a complaint's type has a column of its own: checked here, not at the store
    actor = _actor(name, value)
    personal = {column: _text(value, keys) for column, keys in properties.columns.items()}
    user_refs = {k: refs for k, v in value.items() if properties.names_users(k) and (refs := _user_ids(k, v))}
    consumed = _IDENTITY_KEYS | set(user_refs) | {k for keys in properties.columns.values() for k in keys}
    extra = {k: v for k, v in value.items() if k not in consumed}
    if extra:
        personal[EXTRA] = json.dumps(extra, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    canonical = json.dumps({"event": name, "value": value, "key": envelope.get("key")}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, default=str)
    if len(canonical) > MAX_ENVELOPE_CHARS:
        raise EnvelopeError(f"an envelope may hold at most {MAX_ENVELOPE_CHARS} characters of JSON, "
                            f"this one has {len(canonical)}")
    return Event(
        event=name, at=at, actor=actor, personal=personal, user_refs=user_refs,
        dedup_key=hmac.new(dedup_secret, canonical.encode(), hashlib.sha256).hexdigest()[:32],
        room_id=_ref(value, ("room_id", "room", "event_id")), message_id=_ref(value, ("message_id",)),
        platform=_scalar(value.get("platform")),
        raw_value=value,
    )


def time_problem(at: datetime, received_at: datetime, cap_months: int) -> str | None:
    """Why an event's time cannot be stored, if it cannot: more than a day ahead of its
    receipt (it would escape the retention cap), or older than the cap (it is already due
    for deletion)."""
    if at > received_at + FUTURE_SLACK:
        return "`value.created_at` is more than a day in the future"
    if at < add_months(received_at, -cap_months):
        return f"`value.created_at` is older than the retention cap ({cap_months} months)"
    return None


def _event_time(created_at: Any, received_at: datetime) -> datetime:
    """`value.created_at` (set by the platform's backend, UTC) when present, else receipt time."""
    if created_at is None or created_at == "":
        return received_at
    if not isinstance(created_at, str):
        raise EnvelopeError("`value.created_at` must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError("`value.created_at` is not an ISO 8601 timestamp") from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise EnvelopeError("`value.created_at` is out of range") from None


def _actor(name: str, value: Mapping[str, Any]) -> Actor | None:
    if name.startswith("admin_"):
        admin = value.get("user_id")
        return Actor("admin", _id(admin, "user_id")) if admin not in (None, "") else None
    for key in ACTOR_KEYS:
        if value.get(key) not in (None, ""):
            return Actor("user", _id(value[key], key))
    return None


def _id(raw: Any, key: str) -> str:
    if not _is_id(raw):
        raise EnvelopeError(f"`value.{key}` must be a string of at most {MAX_ID} characters")
    return str(raw)


def _is_id(raw: Any) -> bool:
    return isinstance(raw, str | int) and not isinstance(raw, bool) and len(str(raw)) <= MAX_ID


def _ref(value: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """A room or message id: the first of `keys` present; stored in a column of MAX_ID."""
    for key in keys:
        raw = value.get(key)
        if raw not in (None, ""):
            return _id(raw, key)
    return ""


def _text(value: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        if value.get(key) not in (None, ""):
            raw = value[key]
            return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
    return ""


def _user_ids(key: str, raw: Any) -> tuple[str, ...]:
    """One id or a list of ids (ids inside lists are pseudonymised too; empty ones are skipped).
    Any other shape is refused: a value that names users is never stored as it is."""
    items = raw if isinstance(raw, list) else [raw]
    present = [i for i in items if i not in (None, "")]
    if not all(_is_id(i) for i in present):
        raise EnvelopeError(f"`value.{key}` names users: it must be a user id, or a list of user ids, "
                            f"of at most {MAX_ID} characters each")
    return tuple(str(i) for i in present)


def report_type(value: Mapping[str, Any]) -> str | None:
    """A complaint's type: the reference's `reportType`, or `type` as some platform builds send it."""
    for key in ("reportType", "type"):
        raw = value.get(key)
        if raw not in (None, ""):
            text = str(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
            if not text or len(text) > MAX_REPORT_TYPE:
                raise EnvelopeError(f"`value.{key}` must be a string of at most {MAX_REPORT_TYPE} characters")
            return text
    return None


def check_storable(envelope: Any) -> None:
    """Refuse what no store can keep, naming where it is (never the value): NUL bytes (PostgreSQL
    text cannot hold them), lone surrogates (not Unicode: UTF-8 cannot encode them), and nesting
    deeper than MAX_DEPTH. Iterative, so a hostile depth costs no recursion."""
    stack: list[tuple[Any, str, int]] = [(envelope, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, f"`{where}`" if where else "the envelope")
        elif isinstance(item, Mapping | list):
            if depth >= MAX_DEPTH:
                raise EnvelopeError(f"`{where}` nests deeper than {MAX_DEPTH} levels")
            pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    _check_text(key, f"a key in `{where or 'the envelope'}`")
                stack.append((child, _path(where, key, depth), depth + 1))


def _path(where: str, key: Any, depth: int) -> str:
    """Where a value sits, for an error message: field names down to `value.<field>`, then
    elided (deeper keys may be data, and data never goes into a message)."""
    if depth >= 2:
        return where if where.endswith("…") else f"{where}…"
    return f"{where}.{str(key)[:60]}".lstrip(".")


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise EnvelopeError(f"{where} contains a NUL character (\\u0000), which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvelopeError(f"{where} is not valid Unicode (it holds a lone surrogate)") from None


def _scalar(raw: Any) -> str:
    return "" if raw is None else str(raw)


def supersedes(at: datetime, value: str, current_at: datetime | None, current: str | None) -> bool:
    """Last writer wins per field, by event time: does a value set at `at` replace the current
    one? Equal times are settled by the value itself, so delivery order never decides."""
    return current_at is None or (at, value) > (current_at, current or "")


def searchable(raw: str) -> tuple[str, ...]:
    """The texts in which a raw webhook body may name a user, prepared once per body: the text
    as it is, with JSON escapes decoded (`\\u00fc`, `\\/`, ...), percent-decoded, and, for a
    body that parses, each of its strings (keys included) and numbers."""
    texts = [raw, _unescaped(raw), unquote(raw)]
    try:
        stack = [json.loads(raw)]
    except (ValueError, RecursionError):
        return tuple(texts)
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool):
            texts.append(str(item))  # a numeric id
    return tuple(texts)


def names(texts: Sequence[str], needle: str) -> bool:
    """Do the `searchable` texts of a body name `needle` (a user id) as a whole token? Erasing
    "user_1" must not take dead letters naming "user_12"."""
    if not needle:
        return False
    token = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(needle)}(?![A-Za-z0-9_])")
    return any(token.search(text) for text in texts)


def mentions(raw: str, needle: str) -> bool:
    """Does a raw webhook body name `needle`, in any escaping (see `searchable`, `names`)?"""
    return names(searchable(raw), needle)


_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\([\\/\"bfnrt])")
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescaped(raw: str) -> str:
    """JSON string escapes decoded throughout a text that may not parse (a truncated body)."""
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return chr(int(match.group(1), 16))
        return _SIMPLE.get(match.group(2), match.group(2))

    return _JSON_ESCAPE.sub(one, raw)


def split_body(body: Any) -> list[Any]:
    """One envelope or a JSON array of up to MAX_BATCH."""
    if isinstance(body, list):
        if not body:
            raise EnvelopeError("the array is empty")
        if len(body) > MAX_BATCH:
            raise EnvelopeError(f"a batch holds at most {MAX_BATCH} envelopes, this one has {len(body)}")
        return body
    return [body]
