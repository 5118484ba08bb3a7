"""Repositories for the operational data events bring: receipts, messages,
complaints, logins, dead letters. Bulk statements: a webhook batch holds up to 1,000 events."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, case, delete, func, select, true, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.domain.ids import new_id
from app.models import Complaint, DeadLetter, EventReceipt, Login, Message, Subject, Suppression
from app.ports import MessageRef
from app.ports.repositories import Kept
from app.stores.sql.queries import is_postgresql, json_rows, member_of, newest_first_page, per_subject, rowcount


def insert_ignoring_conflicts(session: Session, table: Table, rows: Sequence[Mapping[str, Any]],
                              returning: Any = None) -> list[Any]:
    """INSERT ... ON CONFLICT DO NOTHING on both dialects; returns `returning` of inserted rows."""
    return _insert(session, table, rows, ignore_conflicts=True, returning=returning)


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """A plain INSERT of many rows (Core, no ORM objects): for rows that cannot exist yet (ids
    just made up), where a conflict is a fault to raise, not a race to settle."""
    _insert(session, table, rows, ignore_conflicts=False, returning=None)


def _insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, ignore_conflicts: bool,
            returning: Any) -> list[Any]:
    """On PostgreSQL the rows go as one JSON document (`queries.json_rows`): the same statement
    text for any number of rows, where a RETURNING insert would render, send and parse a VALUES
    list of every row on each call, and an executemany one statement per row.
    That needs every row to name the same columns, including each column with a client-side
    default (an INSERT ... SELECT evaluates a default once, not per row); other calls take the
    executemany path."""
    if not rows:
        return []
    if is_postgresql(session) and _same_columns_with_defaults(table, rows):
        names = list(rows[0])
        given = json_rows({name: table.c[name].type for name in names}, rows)
        from_rows = postgresql.insert(table).from_select(
            names, select(*(given.c[name] for name in names)), include_defaults=False)
        if ignore_conflicts:
            from_rows = from_rows.on_conflict_do_nothing()
        if returning is None:
            session.execute(from_rows)
            return []
        return list(session.scalars(from_rows.returning(returning)))
    statement = (postgresql.insert if is_postgresql(session) else sqlite.insert)(table)
    if ignore_conflicts:
        statement = statement.on_conflict_do_nothing()
    if returning is None:
        session.execute(statement, list(rows))  # executemany: one cached statement for any count
        return []
    return list(session.scalars(statement.returning(returning), list(rows)))


def _same_columns_with_defaults(table: Table, rows: Sequence[Mapping[str, Any]]) -> bool:
    names = set(rows[0])
    return all(set(row) == names for row in rows) and all(
        column.name in names for column in table.c if column.default is not None)


def upsert_filling(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                   fill: Sequence[str], where: Any,
                   keep: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
    """INSERT, or on a conflict on `keys` overwrite the `fill` columns of the existing row
    where `where` holds (both dialects); otherwise the existing row is left alone. `keep`:
    given the row that was to be inserted (`excluded`), per fill column a condition under
    which the existing row keeps its own value."""
    if not rows:
        return
    insert = postgresql.insert if is_postgresql(session) else sqlite.insert
    statement = insert(table)
    kept = keep(statement.excluded) if keep else {}
    values = {c: case((kept[c], table.c[c]), else_=statement.excluded[c]) if c in kept else statement.excluded[c]
              for c in fill}
    statement = statement.on_conflict_do_update(index_elements=list(keys), set_=values, where=where)
    session.execute(statement, list(rows))


class Receipts:
    def __init__(self, session: Session) -> None:
        self.session = session

    def claim(self, project_id: str, keys: Sequence[str], now: datetime) -> set[str]:
        """Record the keys; returns those seen for the first time (a concurrent duplicate loses)."""
        rows = [{"project_id": project_id, "dedup_key": k, "received_at": now} for k in dict.fromkeys(keys)]
        return set(insert_ignoring_conflicts(self.session, EventReceipt.__table__, rows,  # type: ignore[arg-type]
                                             returning=EventReceipt.dedup_key))

    def forget(self, project_id: str, keys: Sequence[str]) -> int:
        """Unclaim these keys: events dropped without an effect, to be taken when sent again."""
        if not keys:
            return 0
        return rowcount(self.session.execute(delete(EventReceipt).where(
            EventReceipt.project_id == project_id, member_of(self.session, EventReceipt.dedup_key, list(keys)))))

    def delete_in(self, project_id: str, before: datetime | None = None) -> int:
        """The project's dedup records (received before `before`, if given)."""
        query = delete(EventReceipt).where(EventReceipt.project_id == project_id)
        if before is not None:
            query = query.where(EventReceipt.received_at < before)
        return rowcount(self.session.execute(query))


class Messages:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """New messages; one whose deletion or edit arrived first (a placeholder) is filled in,
        stays deleted and keeps its edited text, if its author made them (or, for a deletion,
        an admin or a moderator: a placeholder of nobody). A message already stored is not
        changed by a repeated `message_sent`."""
        table = Message.__table__

        def kept(sent: Any) -> dict[str, Any]:
            by_author = table.c.subject_id.is_(None) | (table.c.subject_id == sent.subject_id)
            return {"text": table.c.edited_at.is_not(None) & (table.c.subject_id == sent.subject_id),
                    "edited_at": table.c.subject_id == sent.subject_id, "deleted_at": by_author}

        upsert_filling(self.session, table, [{"id": new_id(), "placeholder": False, **r} for r in rows],  # type: ignore[arg-type]
                       keys=["project_id", "message_id"],
                       fill=["room_id", "subject_id", "text", "sent_at", "placeholder", "edited_at", "deleted_at"],
                       where=table.c.placeholder.is_(True), keep=kept)

    def edit(self, project_id: str, message_id: str, subject_id: str, text: str, at: datetime) -> bool:
        """The author changed the message's text at `at`: the latest edit by event time wins,
        and the old text is overwritten in place. An edit that arrives before its
        `message_sent` waits in a placeholder. False when nothing changed (an older edit, a
        message of someone else, or one whose text was already removed)."""
        edited = self.session.execute(update(Message).where(
            Message.project_id == project_id, Message.message_id == message_id,
            Message.subject_id == subject_id, Message.removed_at.is_(None),
            Message.edited_at.is_(None) | (Message.edited_at < at),
        ).values(text=text, edited_at=at))
        if edited.rowcount:  # type: ignore[attr-defined]
            return True
        inserted = insert_ignoring_conflicts(self.session, Message.__table__, [{  # type: ignore[arg-type]
            "id": new_id(), "project_id": project_id, "message_id": message_id, "room_id": None,
            "subject_id": subject_id, "text": text, "sent_at": at, "edited_at": at, "placeholder": True,
        }], returning=Message.id)
        return bool(inserted)

    def of_subject(self, subject_id: str) -> list[Message]:
        """The subject's messages, oldest first (the export)."""
        return list(self.session.scalars(select(Message).where(Message.subject_id == subject_id)
                                         .order_by(Message.sent_at)))

    def in_project(self, project_id: str, sent_before: datetime | None = None) -> list[MessageRef]:
        """(row id, message id, room id, author subject id) of the project's messages, sent
        before `sent_before` if given: what retention and offboarding ask holds about."""
        query = select(Message.id, Message.message_id, Message.room_id, Message.subject_id).where(
            Message.project_id == project_id)
        if sent_before is not None:
            query = query.where(Message.sent_at < sent_before)
        return [MessageRef(*row) for row in self.session.execute(query)]

    def delete_ids(self, row_ids: Sequence[str]) -> int:
        if not row_ids:
            return 0
        return rowcount(self.session.execute(delete(Message).where(Message.id.in_(row_ids))))

    def get(self, project_id: str, message_id: str) -> Message | None:
        return self.session.scalar(select(Message).where(Message.project_id == project_id,
                                                         Message.message_id == message_id))

    def mark_deleted(self, project_id: str, message_id: str, at: datetime, by: str | None = None) -> None:
        """The message was deleted at `at` (the earliest deletion wins, whatever the delivery
        order). `by`: the chat user (subject) who deleted it, which only its author may; None
        for an admin or a moderator, who may delete any message. Not stored yet: a tombstone
        (of `by`) waits for its `message_sent`, which keeps the deletion if the author made it."""
        allowed = true() if by is None else Message.subject_id == by
        self.session.execute(update(Message).where(
            Message.project_id == project_id, Message.message_id == message_id, allowed,
            Message.deleted_at.is_(None) | (Message.deleted_at > at),
        ).values(deleted_at=at))
        self.session.execute(update(Message).where(  # a tombstone is dated by its earliest deletion
            Message.project_id == project_id, Message.message_id == message_id, Message.placeholder.is_(True),
            allowed, Message.sent_at > at,
        ).values(sent_at=at))
        insert_ignoring_conflicts(self.session, Message.__table__, [{  # type: ignore[arg-type]
            "id": new_id(), "project_id": project_id, "message_id": message_id, "room_id": None,
            "subject_id": by, "text": None, "sent_at": at, "deleted_at": at, "placeholder": True,
        }])

    def undelete(self, project_id: str, message_id: str) -> None:
        """A message hidden by moderation is shown again."""
        self.session.execute(update(Message).where(Message.project_id == project_id,
                                                   Message.message_id == message_id).values(deleted_at=None))

    def per_subject(self, subject_ids: Sequence[str]) -> dict[str, int]:
        return per_subject(self.session, Message.subject_id, subject_ids)

    def refs(self, subject_ids: Sequence[str]) -> dict[str, tuple[set[str], set[str]]]:
        """subject -> (room ids, message ids) of its messages: what room/message holds can name."""
        found: dict[str, tuple[set[str], set[str]]] = {}
        if not subject_ids:
            return found
        rows = self.session.execute(select(Message.subject_id, Message.room_id, Message.message_id)
                                    .where(member_of(self.session, Message.subject_id, subject_ids)))
        for subject_id, room_id, message_id in rows:
            rooms, messages = found.setdefault(str(subject_id), (set(), set()))
            if room_id:
                rooms.add(room_id)
            messages.add(message_id)
        return found

    def leaving_feed(self, project_id: str, deleted_before: datetime) -> list[tuple[Message, Subject | None]]:
        """Deleted messages due to leave the feed (no open complaint), with their author."""
        open_complaint = select(Complaint.id).where(
            Complaint.project_id == Message.project_id, Complaint.message_id == Message.message_id,
            Complaint.resolved_at.is_(None),
        ).exists()
        rows = self.session.execute(
            select(Message, Subject).outerjoin(Subject, Subject.id == Message.subject_id).where(
                Message.project_id == project_id, Message.deleted_at.is_not(None),
                Message.deleted_at <= deleted_before, Message.removed_at.is_(None),
                Message.archived_at.is_(None), ~open_complaint,
            )
        )
        return [(message, author) for message, author in rows]

    def remove(self, ids: Sequence[str], now: datetime) -> None:
        """Out of the feed: the text is erased, the row stays as a tombstone."""
        if ids:
            self.session.execute(update(Message).where(Message.id.in_(ids)).values(removed_at=now, text=None))

    def covered(self, project_id: str, rooms: Sequence[str], message_ids: Sequence[str]) -> list[Message]:
        """A project's messages in these rooms or with these ids (what room and message holds keep)."""
        if not rooms and not message_ids:
            return []
        return list(self.session.scalars(select(Message).where(
            Message.project_id == project_id, Message.room_id.in_(rooms) | Message.message_id.in_(message_ids))
            .order_by(Message.sent_at, Message.id)))

    def per_subject_except(self, subject_ids: Sequence[str], kept: Kept) -> dict[str, int]:
        """The subjects' messages that no hold keeps, counted per subject."""
        return per_subject(self.session, Message.subject_id, subject_ids, *_not_kept(kept))

    def delete_for(self, subject_ids: Sequence[str], kept: Kept = ((), ())) -> None:
        """The subjects' messages, except those that holds keep."""
        self.session.execute(delete(Message).where(member_of(self.session, Message.subject_id, subject_ids),
                                                   *_not_kept(kept)))




def _not_kept(kept: Kept) -> list[Any]:
    rooms, messages = kept
    conditions: list[Any] = []
    if rooms:
        conditions.append(tuple_(Message.project_id, func.coalesce(Message.room_id, "")).not_in(list(rooms)))
    if messages:
        conditions.append(tuple_(Message.project_id, Message.message_id).not_in(list(messages)))
    return conditions


class Complaints:
    def __init__(self, session: Session) -> None:
        self.session = session

    def open(self, project_id: str, message_id: str, reporter: str | None, report_type: str | None,
             at: datetime) -> None:
        self.session.add(Complaint(project_id=project_id, message_id=message_id, reporter_subject_id=reporter,
                                   report_type=report_type, opened_at=at))

    def resolve(self, project_id: str, message_id: str, now: datetime) -> int:
        result = self.session.execute(update(Complaint).where(
            Complaint.project_id == project_id, Complaint.message_id == message_id, Complaint.resolved_at.is_(None),
        ).values(resolved_at=now))
        return rowcount(result)

    def delete_in(self, project_id: str, *, keep_messages: Iterable[str], before: datetime | None = None) -> int:
        """The project's complaints (opened before `before`, if given), except those about
        messages a hold keeps."""
        query = delete(Complaint).where(Complaint.project_id == project_id,
                                        Complaint.message_id.not_in(list(keep_messages)))
        if before is not None:
            query = query.where(Complaint.opened_at < before)
        return rowcount(self.session.execute(query))

    def open_count(self, project_id: str, message_id: str) -> int:
        return self.session.scalar(select(func.count()).select_from(Complaint).where(
            Complaint.project_id == project_id, Complaint.message_id == message_id, Complaint.resolved_at.is_(None)
        )) or 0


class Logins:
    def __init__(self, session: Session) -> None:
        self.session = session

    def per_subject(self, subject_ids: Sequence[str]) -> dict[str, int]:
        return per_subject(self.session, Login.subject_id, subject_ids)

    def delete_of(self, subject_ids: Sequence[str]) -> int:
        if not subject_ids:
            return 0
        statement = delete(Login).where(member_of(self.session, Login.subject_id, subject_ids))
        return rowcount(self.session.execute(statement))

    def delete_older(self, project_id: str, before: datetime, keep_user_keys: Iterable[str]) -> int:
        """The project's logins before `before`, except those of the users named (held)."""
        return rowcount(self.session.execute(delete(Login).where(
            Login.at < before, Login.subject_id.in_(select(Subject.id).where(
                Subject.project_id == project_id, Subject.user_key.not_in(list(keep_user_keys)))))))

    def add(self, subject_id: str, ip: str, at: datetime) -> None:
        self.session.add(Login(subject_id=subject_id, ip=ip, at=at))


class DeadLetters:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, project_id: str, received_at: datetime, reason: str, body: str, index: int | None = None) -> None:
        self.session.add(DeadLetter(project_id=project_id, received_at=received_at, reason=reason, body=body,
                                    batch_index=index))

    def page(self, project_id: str, limit: int, cursor: str | None) -> tuple[list[DeadLetter], str | None]:
        query = select(DeadLetter).where(DeadLetter.project_id == project_id)
        return newest_first_page(self.session, query, DeadLetter.received_at, DeadLetter.id, limit, cursor)

    def bodies(self, project_id: str) -> list[tuple[str, datetime, str]]:
        """(id, received_at, sealed body) of every entry of the project."""
        rows = self.session.execute(select(DeadLetter.id, DeadLetter.received_at, DeadLetter.body)
                                    .where(DeadLetter.project_id == project_id))
        return [(entry_id, received, body) for entry_id, received, body in rows]

    def delete_before(self, project_id: str, before: datetime | None, keep: Collection[str] = ()) -> int:
        """The project's entries received before `before`, or all of them, except those in `keep`."""
        statement = delete(DeadLetter).where(DeadLetter.project_id == project_id)
        if before is not None:
            statement = statement.where(DeadLetter.received_at < before)
        if keep:
            statement = statement.where(DeadLetter.id.not_in(sorted(keep)))
        result = self.session.execute(statement)
        return rowcount(result)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.session.execute(delete(DeadLetter).where(DeadLetter.id.in_(ids)))

    def reseal(self, bodies: Mapping[str, str]) -> None:
        """Replace the sealed bodies of these entries (id -> token): one executemany."""
        if bodies:
            table = DeadLetter.__table__
            self.session.execute(table.update().where(table.c.id == bindparam("entry"))  # type: ignore[attr-defined]
                                 .values(body=bindparam("sealed")),
                                 [{"entry": entry, "sealed": sealed} for entry, sealed in bodies.items()])


class Suppressions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, project_id: str, key_hashes: Sequence[str], now: datetime, until: datetime) -> None:
        """Suppress these hashes until `until` (a repeat extends an existing entry)."""
        for key_hash in sorted(set(key_hashes)):
            found = self.session.get(Suppression, (project_id, key_hash))
            if found is None:
                self.session.add(Suppression(project_id=project_id, key_hash=key_hash, created_at=now, until=until))
            elif found.until < until:
                found.until = until

    def standing(self, project_id: str, key_hashes: Sequence[str], now: datetime) -> set[str]:
        if not key_hashes:
            return set()
        return set(self.session.scalars(select(Suppression.key_hash).where(
            Suppression.project_id == project_id, Suppression.key_hash.in_(sorted(set(key_hashes))),
            Suppression.until > now)))

    def remove(self, project_id: str, key_hash: str, now: datetime) -> bool:
        return bool(self.remove_many(project_id, [key_hash], now))

    def remove_many(self, project_id: str, key_hashes: Sequence[str], now: datetime) -> set[str]:
        """End these standing suppressions; returns the hashes that were suppressed."""
        standing = self.standing(project_id, key_hashes, now)
        if standing:
            self.session.execute(delete(Suppression).where(Suppression.project_id == project_id,
                                                           Suppression.key_hash.in_(sorted(standing))))
        return standing

    def delete_in(self, project_id: str) -> int:
        return rowcount(self.session.execute(delete(Suppression).where(Suppression.project_id == project_id)))

    def expire(self, now: datetime) -> int:
        result = self.session.execute(delete(Suppression).where(Suppression.until <= now))
        return rowcount(result)
