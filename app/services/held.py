"""Holds keep exactly what they cover (issue 7 §4, CONTRACT "kept").

A room or message hold takes the data it covers under its own data key (owner: the hold id,
purpose "hold"): the texts of the covered messages in SQL and the sealed values of the covered
events in ClickHouse are opened with their subjects' keys and sealed again under the hold's.
From then on a user's erasure goes ahead around the hold: destroying the user's keys leaves the
held values readable, unchanged, under the hold key (domain.holds.stops).

- `take` seals what standing room and message holds cover and is not under their key yet: at
  placement, and again at the start of every erasure run (data that arrived since). Rows whose
  subject key is already gone are left as they are: there is nothing readable to keep. Whose
  the covered messages and events are (their user ids) is kept under the hold's key too
  (`held_authors`), so a purge that unlinks the user does not hide it from the regulator.
- `data` is what an officer reads of a hold (audited).
- `give_back` runs once a hold no longer stands: its data returns to its subjects' keys where
  those still exist, and the hold key is destroyed (so what belonged to a user erased meanwhile
  becomes unreadable, as the erasure meant).

User and project holds cover whole users: they stop the request (`on_hold`) and need no key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from app.domain.audit import AuditRecord
from app.domain.crypto import Cipher, Undecryptable
from app.domain.events import SEALED_COLUMNS, shown_user_id
from app.domain.holds import KEYED_SCOPES, Hold, Scope
from app.domain.policy import Handles
from app.domain.statuses import SubjectStatus
from app.models import Message
from app.paging import decode_cursor, encode_cursor
from app.ports import NO_SUBJECT, Clock, EventStore, InvalidCursor, MessageRef, UnitOfWork, UnitOfWorkFactory
from app.services.errors import NotFound
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.keys import ANALYTICS, CONTENT, HOLD, MESSAGE_TEXT_AAD, KeyService, day_key_owner, unsealed
from app.services.subjects import SubjectService
from app.services.views import HeldDataOut, HeldEventOut, HeldMessageOut, iso, utc_text

log = structlog.get_logger(__name__)
_TEXT_AAD = MESSAGE_TEXT_AAD.decode()
_AUTHOR_AAD = "held_authors.user_id"


class HeldDataService:
    handles: Handles = frozenset({("sql.held_authors", "subject_id", "kept_while_held"),
                                  ("sql.held_authors", "user_id", "kept_while_held")})

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, keys: KeyService, holds: HoldService,
                 events: EventStore, subjects: SubjectService, identities: Identities) -> None:
        self._subjects = subjects
        self._ids = identities
        self._uow = uow
        self._clock = clock
        self._keys = keys
        self._holds = holds
        self._events = events

    # --- taking covered data under a hold's key ----------------------------------------
    def take(self, hold_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Seal what standing room and message holds (or these) cover under their own keys.
        Returns how many values were taken, per store."""
        taken = {"sql.messages": 0, "clickhouse.events": 0}
        with self._uow() as uow:
            projects = uow.projects.all_names()
            ids = {name: pid for pid, name in projects.items()}
            holds = [h for h in self._holds.standing(uow, list(projects))
                     if h.scope in KEYED_SCOPES and (hold_ids is None or h.id in hold_ids)]
        for hold in holds:
            counts = self._take_one(ids[hold.project], hold)
            for store, n in counts.items():
                taken[store] += n
        return taken

    def _take_one(self, project_id: str, hold: Hold) -> dict[str, int]:
        rooms, messages = _targets(hold)
        # ClickHouse first: the hold counts as sealed (and stops stopping requests) only once
        # both stores hold its data under its key.
        rows = self._events.covered(hold.project, rooms, messages)
        with self._uow() as uow:
            key = self._keys.cipher(uow, hold.id, HOLD)
            owners = self._keys.ciphers(uow, sorted({_owner(project_id, r) for r in rows}), ANALYTICS, create=False)
            uow.commit()  # the hold key exists before anything is sealed under it
        actors = {subject for row in rows if (subject := str(row["subject_id"])) != str(NO_SUBJECT)}
        resealed: dict[str, dict[str, str]] = {}
        for row in rows:
            values = _resealed(row, key, owners.get(_owner(project_id, row)))
            if values:
                resealed[row["dedup_key"]] = values
        self._events.reseal(hold.project, resealed)
        with self._uow() as uow:
            record = uow.holds.lock(hold.id)
            if record is None:
                return {}
            texts = 0
            if record.released_at is None:  # released meanwhile: give_back deals with it
                texts = self._take_messages(uow, project_id, rooms, messages, key, hold.id, actors=actors)
                first = record.sealed_at is None
                record.sealed_at = record.sealed_at or self._clock()
                if first or texts or resealed:
                    uow.audit(AuditRecord("job:holds", "hold.data_sealed", hold.project, None,
                                          {"hold_id": hold.id, "sql.messages": texts,
                                           "clickhouse.events": len(resealed)}))
            uow.commit()
        return {"sql.messages": texts, "clickhouse.events": len(resealed)}

    def take_in(self, uow: UnitOfWork, holds: Sequence[Hold], subject_ids: Collection[str]) -> int:
        """Inside a purge's transaction, just before its subjects' links (and, in immediate
        mode, content keys) are destroyed: their messages that these (room and message) holds
        cover but that arrived after the holds took their data are taken under the holds' keys
        now, authors included, so the purge cannot make them unreadable or anonymous. Returns
        how many texts moved."""
        ids = {name: pid for pid, name in uow.projects.all_names().items()}
        moved = 0
        for hold in holds:
            if hold.scope not in KEYED_SCOPES or hold.project not in ids:
                continue
            key = self._keys.ciphers(uow, [hold.id], HOLD, create=False).get(hold.id)
            if key is None:
                continue
            rooms, messages = _targets(hold)
            moved += self._take_messages(uow, ids[hold.project], rooms, messages, key, hold.id, only=subject_ids)
        return moved

    def _take_messages(self, uow: UnitOfWork, project_id: str, rooms: Sequence[str], messages: Sequence[str],
                       key: Cipher, hold_id: str, only: Collection[str] | None = None,
                       actors: Collection[str] = ()) -> int:
        """The covered messages' texts (of `only` these authors, or all) moved under `key`, and
        their authors (with `actors`: those of the covered events) kept under it."""
        found, authors = self._covered_texts(uow, project_id, rooms, messages)
        if only is not None:
            found = [m for m in found if m.subject_id in only]
        self._keep_authors(uow, hold_id, key, {m.subject_id for m in found if m.subject_id} | set(actors))
        return _move_texts(found, to=lambda _m: key, source=lambda m: authors.get(m.subject_id or ""))

    def _keep_authors(self, uow: UnitOfWork, hold_id: str, key: Cipher, subject_ids: Collection[str]) -> None:
        """The user ids of these subjects, sealed under the hold's key, where the hold has none
        yet and the subject is still linked (a user already purged has none to keep)."""
        missing = sorted(set(subject_ids) - set(uow.holds.authors(hold_id)))
        users = self._ids.user_ids_of(uow, missing) if missing else {}
        uow.holds.add_authors(hold_id, {sid: key.encrypt(user, _AUTHOR_AAD.encode()) for sid, user in users.items()})

    def _covered_texts(self, uow: UnitOfWork, project_id: str, rooms: Sequence[str],
                       messages: Sequence[str]) -> tuple[list[Message], dict[str, Cipher]]:
        """The covered messages, and their authors' content keys (those that still exist)."""
        found = uow.messages.covered(project_id, rooms, messages)
        authors = self._keys.ciphers(uow, sorted({m.subject_id for m in found if m.subject_id}), CONTENT,
                                     create=False)
        return found, authors

    # --- what officers read -------------------------------------------------------------
    def data(self, projects: Mapping[str, str], hold_id: str, *, actor: str, limit: int = 50,
             cursor: str | None = None) -> HeldDataOut:
        """What the hold keeps, opened (audited): a room or message hold's messages and events,
        under its key; a user hold's user, or a project hold's users (`limit` a page, from
        `cursor`), with their profiles, messages and events under their own keys."""
        with self._uow() as uow:
            record = uow.holds.get(hold_id)
            if record is None or record.project_id not in projects:
                raise NotFound(f"hold {hold_id} not found")
            project = projects[record.project_id]
            hold = Hold(record.id, project, Scope(record.scope), record.target, record.placed_at)
            if hold.scope not in KEYED_SCOPES:  # user and project holds cover whole users
                return self._users_data(uow, record.project_id, hold, actor, limit, cursor)
            # The covered data is under this hold's key once taken; before that (the hold is
            # taken at placement and at each erasure run) under its subjects' own keys; and where
            # another hold covers it too, maybe under that hold's key: it opens with any of them.
            # A hold whose data was given back (released) keeps nothing any more.
            keeping = [r.id for r in uow.holds.not_returned() if r.project_id == record.project_id]
            holds = self._keys.ciphers(uow, keeping, HOLD, create=False)
            key = holds.get(hold_id)
            held = [*([key] if key else []), *(cipher for owner, cipher in holds.items() if owner != hold_id)]
            rooms, message_ids = _targets(hold)
            keeps = hold_id in keeping
            found = uow.messages.covered(record.project_id, rooms, message_ids) if keeps else []
            rows = self._events.covered(project, rooms, message_ids) if keeps else []
            contents = self._keys.ciphers(uow, sorted({m.subject_id for m in found if m.subject_id}), CONTENT,
                                          create=False)
            owners = self._keys.ciphers(uow, sorted({_owner(record.project_id, r) for r in rows}), ANALYTICS,
                                        create=False)
            kept = {sid: user for sid, token in uow.holds.authors(hold_id).items()
                    if (user := _open(key, token, _AUTHOR_AAD)) is not None}
            others = {m.subject_id for m in found if m.subject_id} | {r["subject_id"] for r in rows}
            users = {sid: shown_user_id(user) for sid, user in
                     {**self._ids.user_ids_of(uow, sorted(others - kept.keys())), **kept}.items()}

            def own(found_keys: Mapping[str, Cipher], owner: str | None) -> list[Cipher]:
                return [*held, *([found_keys[owner]] if owner is not None and owner in found_keys else [])]

            messages = [(_sort_key(m.sent_at, str(m.id)),
                         HeldMessageOut(message_id=m.message_id, room_id=m.room_id, sent_at=m.sent_at.isoformat(),
                                        deleted_at=iso(m.deleted_at),
                                        text=unsealed(own(contents, m.subject_id), m.text, _TEXT_AAD),
                                        user_id=users.get(m.subject_id or "")))
                        for m in found]
            events = []
            for r in rows:
                ciphers = own(owners, _owner(record.project_id, r))
                personal = {c: v for c in SEALED_COLUMNS if r[c] and (v := unsealed(ciphers, r[c], c)) is not None}
                if personal:  # an event whose values no key opens any more keeps nothing to show
                    events.append((_sort_key(r["at"], r["dedup_key"]),
                                   HeldEventOut(event=r["event"], at=utc_text(r["at"]), room_id=r["room_id"] or None,
                                                message_id=r["message_id"] or None, personal=personal,
                                                user_id=users.get(r["subject_id"]))))
            page_messages, page_events, next_cursor = _held_page(messages, events, limit, cursor)
            uow.audit(AuditRecord(actor, "hold.data_read", project, None,
                                  {"hold_id": hold_id, "messages": len(page_messages), "events": len(page_events)}))
            uow.commit()
        return HeldDataOut(hold=hold_id, scope=record.scope, sealed=record.sealed_at is not None,
                           messages=page_messages, events=page_events, next_cursor=next_cursor)

    def _users_data(self, uow: UnitOfWork, project_id: str, hold: Hold, actor: str, limit: int,
                    cursor: str | None) -> HeldDataOut:
        if hold.scope is Scope.USER:
            found = self._ids.find(uow, project_id, hold.target)
            subjects, next_cursor = ([found] if found is not None else []), None
        else:
            subjects, next_cursor = uow.subjects.linked_page(project_id, limit, cursor)
        users = self._subjects.opened(uow, project_id, subjects)
        uow.audit(AuditRecord(actor, "hold.data_read", hold.project, None,
                              {"hold_id": hold.id, "users": len(users),
                               "messages": sum(len(u.messages) for u in users),
                               "events": sum(len(u.events) for u in users)}))
        uow.commit()
        return HeldDataOut(hold=hold.id, scope=hold.scope.value, sealed=False, messages=[], events=[],
                           users=users, next_cursor=next_cursor)

    # --- after the hold ----------------------------------------------------------------
    def give_back(self) -> int:
        """Holds that no longer stand: their data back under its subjects' keys (where those
        still exist), then the hold key destroyed. Returns how many holds were settled."""
        now = self._clock()
        settled = 0
        with self._uow() as uow:
            projects = uow.projects.all_names()
            standing = {h.id for h in self._holds.standing(uow, list(projects))}
            ended = [r for r in uow.holds.not_returned() if r.id not in standing]
            # a sealing that never finished (a crash between the key and `sealed_at`) may have
            # sealed values under the key already: settled the same way
            keyed = uow.keys.having([r.id for r in ended], HOLD)
            done = [(r.id, r.project_id, projects[r.project_id], r.scope, r.target)
                    for r in ended if r.sealed_at is not None or r.id in keyed]
        for hold_id, project_id, project, scope, target in done:
            self._give_back_one(project_id, Hold(hold_id, project, Scope(scope), target, now))
            settled += 1
        return settled

    def _give_back_one(self, project_id: str, hold: Hold) -> None:
        rooms, messages = _targets(hold)
        rows = self._events.covered(hold.project, rooms, messages)
        with self._uow() as uow:
            key = self._keys.ciphers(uow, [hold.id], HOLD, create=False).get(hold.id)
            owners = self._keys.ciphers(uow, sorted({_owner(project_id, r) for r in rows}), ANALYTICS, create=False)
        returned: dict[str, dict[str, str]] = {}
        for row in rows:
            owner = owners.get(_owner(project_id, row))
            if key is not None and owner is not None:
                values = _resealed(row, owner, key)
                if values:
                    returned[row["dedup_key"]] = values
        self._events.reseal(hold.project, returned)
        with self._uow() as uow:
            record = uow.holds.lock(hold.id)
            if record is None or record.returned_at is not None:
                return
            texts = 0
            found, authors = self._covered_texts(uow, project_id, rooms, messages)
            if key is not None:
                texts = _move_texts(found, to=lambda m: authors.get(m.subject_id or ""), source=lambda _m: key)
            deleted = self._delete_if_author_erased(uow, hold.project, project_id, found, authors)
            destroyed = len(self._keys.destroy(uow, [hold.id], HOLD))
            uow.holds.forget_authors(hold.id)
            record.returned_at = self._clock()
            uow.audit(AuditRecord("job:holds", "hold.data_returned", hold.project, None,
                                  {"hold_id": hold.id, "sql.messages": texts, "clickhouse.events": len(returned),
                                   "sql.messages_deleted": deleted, "keys_destroyed": destroyed}))
            uow.commit()

    def _delete_if_author_erased(self, uow: UnitOfWork, project: str, project_id: str, found: Sequence[Message],
                                 authors: Mapping[str, Cipher]) -> int:
        """The covered messages whose author was erased in `immediate` mode while the hold stood
        (the subject is no longer active and its content key is destroyed): the hold alone kept
        them, so they are deleted now, as the erasure would have done, unless another standing
        hold still covers them. Returns how many."""
        orphaned = [m for m in found if m.subject_id and m.subject_id not in authors]
        if not orphaned:
            return 0
        erased = {s.id for s in uow.subjects.by_ids(sorted({m.subject_id for m in orphaned if m.subject_id}))
                  if s.status != SubjectStatus.ACTIVE}
        refs = [MessageRef(m.id, m.message_id, m.room_id, m.subject_id) for m in orphaned if m.subject_id in erased]
        free, _held = self._holds.split_messages(uow, project, project_id, refs,
                                                 self._holds.standing(uow, [project_id]))
        return uow.messages.delete_ids([m.row_id for m in free])


def _sort_key(at: datetime, unique: str) -> str:
    """A held item's place in its list: its time (UTC, fixed width, so text order is time
    order), then an id unique in the list."""
    moment = at.astimezone(UTC) if at.tzinfo is not None else at  # naive times are UTC already
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}|{unique}"


def _held_page(messages: Sequence[tuple[str, HeldMessageOut]], events: Sequence[tuple[str, HeldEventOut]],
               limit: int, cursor: str | None) -> tuple[list[HeldMessageOut], list[HeldEventOut], str | None]:
    """A page of what a room or message hold keeps: its messages in time order, then its events,
    `limit` items in all, after `cursor` (the last item's list, 0 or 1, and place in it)."""
    items: list[tuple[int, str, HeldMessageOut | HeldEventOut]] = [
        *((0, key, out) for key, out in sorted(messages, key=lambda m: m[0])),
        *((1, key, out) for key, out in sorted(events, key=lambda e: e[0]))]
    start = 0
    if cursor is not None:
        part, key = decode_cursor(cursor, 2)
        if part not in (0, 1) or type(part) is not int or not isinstance(key, str):
            raise InvalidCursor("cursor is not one this API issued")
        start = next((i for i, (p, k, _) in enumerate(items) if (p, k) > (part, key)), len(items))
    page = items[start:start + limit]
    more = start + limit < len(items)
    next_cursor = encode_cursor(page[-1][0], page[-1][1]) if page and more else None
    return ([out for _, _, out in page if isinstance(out, HeldMessageOut)],
            [out for _, _, out in page if isinstance(out, HeldEventOut)], next_cursor)


def _targets(hold: Hold) -> tuple[list[str], list[str]]:
    """(rooms, message ids) a hold names."""
    return ([hold.target], []) if hold.scope is Scope.ROOM else ([], [hold.target])


def _owner(project_id: str, row: Mapping[str, Any]) -> str:
    """The owner of the key an event's values are sealed under (see services.ingest._key_owner)."""
    subject = str(row["subject_id"])
    return day_key_owner(ANALYTICS, project_id, row["at"].date()) if subject == str(NO_SUBJECT) else subject


def _moved(token: str | None, to: Cipher | None, source: Cipher | None, aad: str) -> str | None:
    """`token` sealed again under `to`, or None when it stays as it is: empty, already under
    `to`, or not opened by `source` (its key is gone: there is nothing readable to move)."""
    if not token or to is None or _opens(to, token, aad):
        return None
    plain = _open(source, token, aad)
    return None if plain is None else to.encrypt(plain, aad.encode())


def _resealed(row: Mapping[str, Any], to: Cipher, source: Cipher | None) -> dict[str, str]:
    """An event's sealed values moved from `source` to `to` (see `_moved`), by column."""
    moved = {column: _moved(row[column], to, source, column) for column in SEALED_COLUMNS}
    return {column: token for column, token in moved.items() if token is not None}


def _move_texts(messages: Sequence[Message], to: Callable[[Message], Cipher | None],
                source: Callable[[Message], Cipher | None]) -> int:
    """Message texts moved from `source(message)`'s key to `to(message)`'s; returns how many."""
    count = 0
    for message in messages:
        token = _moved(message.text, to(message), source(message), _TEXT_AAD)
        if token is not None:
            message.text, count = token, count + 1
    return count


def _open(cipher: Cipher | None, token: str | None, aad: str) -> str | None:
    if cipher is None or not token:
        return None
    try:
        return cipher.decrypt(token, aad.encode())
    except Undecryptable:
        return None


def _opens(cipher: Cipher, token: str, aad: str) -> bool:
    return _open(cipher, token, aad) is not None
