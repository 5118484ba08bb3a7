"""The SQL building blocks every repository shares: membership in large sets, keyset pages,
counts per subject, row locks and changed-row counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, ColumnElement, Select, Text, any_, bindparam, cast, column, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TableValuedAlias
from sqlalchemy.types import TypeEngine

from app.paging import decode_time_cursor, encode_cursor
from app.stores.sql.engine import json_text

_Row = TypeVar("_Row")


def member_of(session: Session, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN values` for many values: on PostgreSQL one parameter, since sending and
    parsing 10,000 bind values costs more than the lookup itself. The values go as one JSON
    array (`= ANY(ARRAY(SELECT json_array_elements_text(:values)))`, an index lookup like
    `= ANY(:array)`): psycopg writes a text[] parameter element by element in Python, 6 % of
    an anonymise run, where one msgspec encoding is C."""
    if is_postgresql(session):
        document = cast(bindparam(None, json_text(list(values)), type_=Text), JSON)
        listed = func.array(select(func.json_array_elements_text(document)).scalar_subquery())
        return column == any_(listed)  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def json_rows(columns: Mapping[str, TypeEngine[Any]], rows: Sequence[Mapping[str, Any]]) -> TableValuedAlias:
    """PostgreSQL: rows sent as one JSON document (`json_to_recordset(:rows) AS v(name type, ...)`),
    for an UPDATE ... FROM or an INSERT ... SELECT of many rows in one statement. A statement
    built on it has the same text for any number of rows, so it is parsed once, where a VALUES
    list of 1,000 rows is rendered, sent and parsed each time, and an executemany runs one
    statement per row. One JSON document rather than one array parameter per column: psycopg
    writes a text[] element by element in Python, escaping quotes and the spaces of times (0.5 s
    for 10,000 rows of JSON), where one msgspec encoding does this in C. Times go as naive UTC
    (ISO 8601), as UTCDateTime stores them; bytes in bytea's hex form; JSON values stay JSON."""
    document = json_text([{name: _plain(value) for name, value in row.items()} for row in rows])
    return (func.json_to_recordset(cast(bindparam(None, document, type_=Text), JSON))
            .table_valued(*(column(name, kind) for name, kind in columns.items()))
            .render_derived(with_types=True))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Lethe stores UTC-aware datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return value


def after_cursor(query: Select[_Row], at: Any, row_id: Any, cursor: str | None) -> Select[_Row]:
    """The rows after a keyset cursor of (timestamp, id), in newest-first order."""
    if not cursor:
        return query
    after, last_id = decode_time_cursor(cursor)
    return query.where((at < after) | ((at == after) & (row_id < last_id)))


def newest_first_page(session: Session, query: Select[_Row], at: Any, row_id: Any, limit: int,
                      cursor: str | None) -> tuple[list[_Row], str | None]:
    """One page of `query`, newest first by (at, id), and the cursor of the next page, if any:
    the one way every list route pages."""
    rows = list(session.scalars(after_cursor(query, at, row_id, cursor)
                                .order_by(at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, at.key).isoformat(), getattr(last, row_id.key))


def per_subject(session: Session, column: Any, subject_ids: Sequence[str],
                *where: ColumnElement[bool]) -> dict[str, int]:
    """subject id -> how many rows whose `column` is that subject (and which match `where`,
    if given) there are, 0 for each subject with none: what an erasure step reports and then
    checks is gone."""
    counts = dict.fromkeys(subject_ids, 0)
    if subject_ids:
        rows = session.execute(select(column, func.count()).where(member_of(session, column, subject_ids), *where)
                               .group_by(column))
        counts.update({str(subject_id): int(n) for subject_id, n in rows})
    return counts


def locked(query: Select[_Row]) -> Select[_Row]:
    """FOR UPDATE, and the row as it is now even if this session loaded it before."""
    return query.with_for_update().execution_options(populate_existing=True)


def rowcount(result: Any) -> int:
    """How many rows an UPDATE or DELETE changed."""
    return int(result.rowcount)
