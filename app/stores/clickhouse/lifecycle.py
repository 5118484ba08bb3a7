"""Retention and offboarding in ClickHouse: daily aggregates, partition drops, held-aware deletes.

Held rows are never deleted: a partition that holds any is not dropped whole; its unheld rows
are deleted with a lightweight DELETE and `APPLY DELETED MASK` makes that physical.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from app.stores.clickhouse.client import ClickHouse

SYNC = {"mutations_sync": 2}
MESSAGES = ("message_sent", "admin_message_sent")
REACTIONS = ("message_reaction_sent", "reaction_create", "emoji_sent")


@dataclass(frozen=True, slots=True)
class Held:
    """What standing holds cover, in the terms of the events table."""

    projects: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()  # subject ids of held users
    rooms: frozenset[tuple[str, str]] = frozenset()  # (project, room id)
    messages: frozenset[tuple[str, str]] = frozenset()  # (project, message id)

    def __bool__(self) -> bool:
        return bool(self.projects or self.subjects or self.rooms or self.messages)

    def predicate(self) -> tuple[str, dict[str, Any]]:
        """SQL that is true for held rows, with its bound parameters."""
        return (
            "(project IN {hp:Array(String)} OR subject_id IN {hs:Array(UUID)} "
            "OR (project, room_id) IN {hr:Array(Tuple(String, String))} "
            "OR (project, message_id) IN {hm:Array(Tuple(String, String))})",
            {"hp": sorted(self.projects), "hs": [uuid.UUID(s) for s in sorted(self.subjects)],
             "hr": sorted(self.rooms), "hm": sorted(self.messages)},
        )


class EventLifecycle:
    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch

    # --- aggregates ----------------------------------------------------------------------
    def days_to_aggregate(self, before: date) -> list[date]:
        """Days with raw events, before `before`, that have no aggregate row yet."""
        rows = self.ch.rows(
            "SELECT DISTINCT toDate(at) AS d FROM events WHERE d < {before:Date} "
            "AND d NOT IN (SELECT DISTINCT day FROM daily_metrics) ORDER BY d",
            parameters={"before": before},
        )
        return [r[0] for r in rows]

    def aggregate(self, day: date, now: datetime) -> None:
        """DAU/WAU/MAU, messages and reactions per project for `day` (counts only)."""
        self.ch.command(
            "INSERT INTO daily_metrics SELECT project, {day:Date} AS d, "
            "uniqExactIf(subject_id, toDate(at) = d AND subject_id != toUUIDOrZero('')), "
            "uniqExactIf(subject_id, toDate(at) > d - 7 AND subject_id != toUUIDOrZero('')), "
            "uniqExactIf(subject_id, toDate(at) > d - 30 AND subject_id != toUUIDOrZero('')), "
            "countIf(toDate(at) = d AND event IN {messages:Array(String)}), "
            "countIf(toDate(at) = d AND event IN {reactions:Array(String)}), "
            "countIf(toDate(at) = d), {now:DateTime64(3, 'UTC')} "
            "FROM events WHERE at >= toDateTime64({day:Date} - 29, 3, 'UTC') "
            "AND at < toDateTime64({day:Date} + 1, 3, 'UTC') GROUP BY project",
            parameters={"day": day, "messages": list(MESSAGES), "reactions": list(REACTIONS), "now": now},
        )

    def metrics(self, project: str, since: date, until: date) -> list[dict[str, Any]]:
        rows = self.ch.rows(
            "SELECT day, dau, wau, mau, messages, reactions, events FROM daily_metrics FINAL "
            "WHERE project = {p:String} AND day >= {s:Date} AND day < {u:Date} ORDER BY day",
            parameters={"p": project, "s": since, "u": until},
        )
        keys = ["day", "dau", "wau", "mau", "messages", "reactions", "events"]
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- the 13-month cap ------------------------------------------------------------------
    def expire_before(self, cutoff: date, held: Held) -> dict[str, int]:
        """Remove every event older than `cutoff` (day granularity) except held ones.

        Whole daily partitions are dropped (cheap: no row is rewritten); a partition with held
        rows loses only its unheld rows, physically. Returns rows removed and partitions dropped.
        """
        partitions = [str(p) for (p,) in self.ch.rows(
            "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() "
            "AND table = 'events' AND active AND partition < {c:String} ORDER BY partition",
            parameters={"c": cutoff.strftime("%Y%m%d")},
        )]
        removed, dropped = 0, 0
        predicate, params = held.predicate()
        for partition in partitions:
            where = "toYYYYMMDD(at) = {part:UInt32}"
            total, kept = self.ch.rows(
                f"SELECT count(), countIf({predicate}) FROM events WHERE {where}",
                parameters={**params, "part": int(partition)},
            )[0] if held else (self._count(where, int(partition)), 0)
            if kept == 0:
                self.ch.command("ALTER TABLE events DROP PARTITION {part:String}", parameters={"part": partition},
                                settings=SYNC)
                dropped += 1
            elif total > kept:
                self._delete(f"{where} AND NOT {predicate}", {**params, "part": int(partition)})
            removed += int(total) - int(kept)
        return {"rows": removed, "partitions_dropped": dropped}

    def delete_project(self, project: str, held: Held, before: datetime | None = None) -> int:
        """Offboarding (and per-project shorter retention): the project's rows, except held ones."""
        where = "project = {project:String}"
        params: dict[str, Any] = {"project": project}
        if before is not None:
            where, params = f"{where} AND at < {{before:DateTime64(3, 'UTC')}}", {**params, "before": before}
        if held:
            predicate, held_params = held.predicate()
            where, params = f"{where} AND NOT {predicate}", {**params, **held_params}
        count = int(self.ch.rows(f"SELECT count() FROM events WHERE {where}", parameters=params)[0][0])
        if count:
            self._delete(where, params)
        return count

    def _count(self, where: str, partition: int) -> int:
        return int(self.ch.rows(f"SELECT count() FROM events WHERE {where}", parameters={"part": partition})[0][0])

    def _delete(self, where: str, params: dict[str, Any]) -> None:
        self.ch.command(f"DELETE FROM events WHERE {where}", parameters=params)
        self.ch.command("ALTER TABLE events APPLY DELETED MASK", settings=SYNC)
