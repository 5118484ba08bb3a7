"""Retention and offboarding in ClickHouse: daily aggregates, partition drops, held-aware deletes.

Held rows are never deleted: a partition that holds any is not dropped whole; its unheld rows
are deleted with a lightweight DELETE and `APPLY DELETED MASK` makes that physical.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from app.ports import Held
from app.stores.clickhouse.client import ClickHouse

SYNC = {"mutations_sync": 2}
MESSAGES = ("message_sent", "admin_message_sent")
REACTIONS = ("message_reaction_sent", "reaction_create", "emoji_sent")


def held_rows(held: Held) -> tuple[str, dict[str, Any]]:
    """SQL that is true for the rows standing holds cover, with its bound parameters."""
    return (
        "(project IN {hp:Array(String)} OR subject_id IN {hs:Array(UUID)} "
        "OR (project, room_id) IN {hr:Array(Tuple(String, String))} "
        "OR (project, message_id) IN {hm:Array(Tuple(String, String))})",
        {"hp": sorted(held.projects), "hs": [uuid.UUID(s) for s in sorted(held.subjects)],
         "hr": sorted(held.rooms), "hm": sorted(held.messages)},
    )


class ClickHouseEventLifecycle:
    """Aggregates and removals in the events table (app.ports.EventLifecycle)."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch

    # --- aggregates ----------------------------------------------------------------------
    def days_to_aggregate(self, before: date, recount_days: int = 2) -> list[date]:
        """Days with raw events before `before` that have no aggregate yet, plus the last
        `recount_days` (events arrive late; a recount replaces the earlier row)."""
        rows = self.ch.rows(
            "SELECT DISTINCT toDate(at) AS d FROM events WHERE d < {before:Date} "
            "AND (d NOT IN (SELECT DISTINCT day FROM daily_metrics) OR d >= {before:Date} - {recount:UInt32}) "
            "ORDER BY d",
            parameters={"before": before, "recount": recount_days},
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
    def expire_before(self, cutoff: date, held: Held) -> dict[str, Any]:
        """Remove every event older than `cutoff` (day granularity) except held ones.

        Whole daily partitions are dropped in one statement (cheap: no row is rewritten). A
        partition with held rows is rebuilt from its held rows alone: they are copied to a
        staging table and swapped in with REPLACE PARTITION (atomic and physical at once; a
        table-wide mutation per partition costs minutes). Returns rows removed, partitions dropped
        and held rows kept.
        """
        predicate, params = held_rows(held)
        counts = self.ch.rows(
            f"SELECT toYYYYMMDD(at) AS p, count(), countIf({predicate}) FROM events "
            "WHERE toDate(at) < {cutoff:Date} GROUP BY p ORDER BY p",
            parameters={**params, "cutoff": cutoff},
        )
        drop = [str(p) for p, _total, kept in counts if kept == 0]
        keep = [str(p) for p, _total, kept in counts if kept > 0]
        if drop:
            self.ch.command("ALTER TABLE events " + ", ".join(f"DROP PARTITION {int(p)}" for p in drop))
        if keep:
            self._rebuild_with_held_rows_only(keep, predicate, params)
        removed = sum(int(total) - int(kept) for _p, total, kept in counts)
        return {"rows": removed, "partitions_dropped": len(drop), "held_rows": sum(int(k) for _p, _t, k in counts),
                "held_days": [date(int(p[:4]), int(p[4:6]), int(p[6:])) for p in keep]}

    def _rebuild_with_held_rows_only(self, partitions: list[str], predicate: str, params: dict[str, Any]) -> None:
        staging = f"events_keep_{uuid.uuid4().hex[:12]}"
        self.ch.command(f"CREATE TABLE {staging} AS events")
        try:
            self.ch.command(
                f"INSERT INTO {staging} SELECT * FROM events WHERE toYYYYMMDD(at) IN {{parts:Array(UInt32)}} "
                f"AND {predicate}", parameters={**params, "parts": [int(p) for p in partitions]})
            self.ch.command("ALTER TABLE events " + ", ".join(
                f"REPLACE PARTITION {int(p)} FROM {staging}" for p in partitions))
        finally:
            self.ch.command(f"DROP TABLE IF EXISTS {staging} SYNC")

    def delete_project(self, project: str, held: Held, before: datetime | None = None) -> int:
        """Offboarding (and per-project shorter retention): the project's rows, except held ones."""
        where = "project = {project:String}"
        params: dict[str, Any] = {"project": project}
        if before is not None:
            where, params = f"{where} AND at < {{before:DateTime64(3, 'UTC')}}", {**params, "before": before}
        if held:
            predicate, held_params = held_rows(held)
            where, params = f"{where} AND NOT {predicate}", {**params, **held_params}
        count = int(self.ch.rows(f"SELECT count() FROM events WHERE {where}", parameters=params)[0][0])
        if count:
            self._delete(where, params)
        return count

    def delete_project_metrics(self, project: str) -> int:
        """Offboarding: "all the project's data goes", its anonymous aggregates too (the partner
        they were kept for is gone)."""
        params = {"project": project}
        count = int(self.ch.rows("SELECT count() FROM daily_metrics WHERE project = {project:String}",
                                 parameters=params)[0][0])
        if count:
            self.ch.command("DELETE FROM daily_metrics WHERE project = {project:String}", parameters=params)
        return count

    def _delete(self, where: str, params: dict[str, Any]) -> None:
        self.ch.command(f"DELETE FROM events WHERE {where}", parameters=params)
        self.ch.command("ALTER TABLE events APPLY DELETED MASK", settings=SYNC)
