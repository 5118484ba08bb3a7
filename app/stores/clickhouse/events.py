"""Analytics events in ClickHouse, and their part of an erasure (app.ports.ExternalErasureStep).

Events are never rewritten by an erasure. Their personal columns hold ciphertext under the
subject's analytics key (sealed at the door, see app.services.ingest), and the erasure destroys
that key in SQL (app.stores.sql.erasure_steps.KeysStep). Here the step only counts the
rows it makes unreadable, for the evidence. The ciphertext itself leaves the disk with the
13-month partition drops.

Plaintext personal values can only come from before encryption at the door. Should any exist
for an erased subject, they are blanked the old way: ONE lightweight UPDATE for the batch, then
`APPLY PATCHES` synchronously; the residual check reads with patch parts off and counts
plaintext, so a masked value still on disk would be found.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from app.domain.crypto import TOKEN_PREFIX
from app.domain.events import SEALED_COLUMNS
from app.domain.policy import Handles
from app.ports import NO_SUBJECT, ErasureBatch, EventRow
from app.stores.clickhouse.client import ClickHouse

COLUMNS = ["project", "event", "at", "received_at", "subject_id", "actor_kind", "dedup_key", "room_id",
           "message_id", "platform", *SEALED_COLUMNS, "properties"]
_ANY_PERSONAL = " OR ".join(f"{c} != ''" for c in SEALED_COLUMNS)
_PLAINTEXT = " OR ".join(f"({c} != '' AND NOT startsWith({c}, '{TOKEN_PREFIX}'))" for c in SEALED_COLUMNS)
_BLANK = ", ".join(f"{c} = ''" for c in SEALED_COLUMNS)
SYNC = {"mutations_sync": 2}
TARGETED_PARTITIONS = 16  # up to this many affected days, patches are applied day by day


def column_values(row: EventRow) -> list[Any]:
    """An event row as the events table's columns (COLUMNS)."""
    return [row.project, row.event, row.at, row.received_at,
            uuid.UUID(row.subject_id) if row.subject_id else NO_SUBJECT, row.actor_kind, row.dedup_key,
            row.room_id, row.message_id, row.platform, *(row.personal.get(c, "") for c in SEALED_COLUMNS),
            json.dumps(row.properties, ensure_ascii=False, sort_keys=True, default=str)]


class ClickHouseEventStore:
    """The events table (app.ports.EventStore)."""

    name = "clickhouse.events"
    purged_as = "anonymised"  # the rows stay, ciphertext whose key is gone, until the 13-month cap
    # personal values are sealed under the subject's analytics key (destroyed at anonymise, see
    # KeysStep); plaintext ones left by older versions are blanked here
    handles: Handles = frozenset({*(("clickhouse.events", c, "blank_on_anonymise") for c in SEALED_COLUMNS),
                                  ("clickhouse.events", "properties", "kept_anonymous")})

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch

    def insert(self, rows: Sequence[EventRow], dedup_token: str) -> None:
        """One block; a retry with the same token (after a failed SQL commit) is deduplicated."""
        if rows:
            # max_partitions_per_insert_block: a backfill may span more than 100 days
            self.ch.insert("events", [column_values(r) for r in rows], COLUMNS,
                           settings={"insert_deduplication_token": dedup_token, "max_partitions_per_insert_block": 0})

    # --- erasure -------------------------------------------------------------------------
    def anonymise(self, batch: ErasureBatch) -> Mapping[str, int]:
        """Rows with personal values per subject: what the destruction of their keys makes
        unreadable. Legacy plaintext among them is blanked, physically."""
        counts, plaintext_days = self._personal_rows_and_plaintext_days(batch.subject_ids)
        if plaintext_days:
            self._blank_plaintext(batch.subject_ids, plaintext_days)
        return counts

    def purge(self, batch: ErasureBatch) -> Mapping[str, int]:
        """Events stay, anonymous and unreadable: the same as anonymise (usually nothing new)."""
        return self.anonymise(batch)

    def residual(self, batch: ErasureBatch) -> Mapping[str, int]:
        """Rows that still hold a plaintext personal value, read with patch parts off (what is
        on disk). Ciphertext whose key is gone is not residue: it is unreadable."""
        return self._rows(batch.subject_ids, _PLAINTEXT, masks=False)

    def _personal_rows_and_plaintext_days(self, subject_ids: Sequence[str]) -> tuple[dict[str, int], list[str]]:
        """Rows holding any personal value per subject, and the partitions holding plaintext
        ones. The scan reads the rows' two flags (schema version 4), not their sealed columns;
        the days the flags name are checked against the values themselves (a flag worked out
        before a blanking may still say plaintext), so only real plaintext is blanked."""
        if not subject_ids:
            return {}, []
        ids = [uuid.UUID(s) for s in subject_ids]
        rows = self.ch.rows(
            "SELECT toString(subject_id), count(), groupUniqArrayIf(_partition_id, has_plaintext) FROM events "
            "WHERE subject_id IN {ids:Array(UUID)} AND has_personal GROUP BY subject_id",
            parameters={"ids": ids},
        )
        flagged = sorted({str(p) for _, _, days in rows for p in days})
        if flagged:
            flagged = sorted(str(p) for (p,) in self.ch.rows(
                f"SELECT DISTINCT _partition_id FROM events WHERE _partition_id IN {{days:Array(String)}} "
                f"AND subject_id IN {{ids:Array(UUID)}} AND ({_PLAINTEXT})", parameters={"ids": ids, "days": flagged}))
        return {str(s): int(n) for s, n, _ in rows}, flagged

    def _blank_plaintext(self, subject_ids: Sequence[str], partitions: Sequence[str]) -> None:
        ids = [uuid.UUID(s) for s in subject_ids]
        self.ch.command(f"UPDATE events SET {_BLANK} WHERE subject_id IN {{ids:Array(UUID)}} AND ({_PLAINTEXT})",
                        parameters={"ids": ids}, settings={"allow_experimental_lightweight_update": 1})
        if len(partitions) <= TARGETED_PARTITIONS:
            self._apply_patches(partitions)  # a few users: rewrite only the days they were active on
        else:
            self.ch.command("ALTER TABLE events APPLY PATCHES", settings=SYNC)

    def _apply_patches(self, partitions: Sequence[str]) -> None:
        """Make lightweight updates physical, day by day: the values they replace leave the files."""
        for partition in partitions:
            if not partition.isdigit():  # ids of toYYYYMMDD partitions are digits
                raise ValueError(f"unexpected partition id {partition!r}")
            self.ch.command(f"ALTER TABLE events APPLY PATCHES IN PARTITION ID '{partition}'", settings=SYNC)

    def _rows(self, subject_ids: Sequence[str], where: str, *, masks: bool) -> dict[str, int]:
        if not subject_ids:
            return {}
        rows = self.ch.rows(
            f"SELECT toString(subject_id), count() FROM events WHERE subject_id IN {{ids:Array(UUID)}} "
            f"AND ({where}) GROUP BY subject_id",
            parameters={"ids": [uuid.UUID(s) for s in subject_ids]},
            settings={"apply_patch_parts": 1 if masks else 0},
        )
        return {str(s): int(n) for s, n in rows}

    # --- held rows (app.services.held) ------------------------------------------------------
    def covered(self, project: str, rooms: Sequence[str], messages: Sequence[str]) -> list[dict[str, Any]]:
        """A project's rows in these rooms or about these messages, with their sealed values."""
        if not rooms and not messages:
            return []
        columns = ["dedup_key", "subject_id", "at", "event", "room_id", "message_id", *SEALED_COLUMNS]
        rows = self.ch.rows(
            f"SELECT {', '.join(columns)} FROM events WHERE project = {{p:String}} "
            "AND (room_id IN {rooms:Array(String)} OR message_id IN {messages:Array(String)}) ORDER BY at",
            parameters={"p": project, "rooms": list(rooms), "messages": list(messages)})
        found = [dict(zip(columns, row, strict=True)) for row in rows]
        for row in found:  # FixedString comes back as bytes
            key = row["dedup_key"]
            row["dedup_key"] = key.decode() if isinstance(key, bytes) else str(key)
            row["subject_id"] = str(row["subject_id"])
        return found

    def reseal(self, project: str, values: Mapping[str, Mapping[str, str]]) -> None:
        """Replace the sealed values of a project's rows (dedup key -> column -> token) in ONE
        lightweight UPDATE: all of them or none. Rows not named, and columns not given, keep
        what they hold."""
        if not values:
            return
        keys = sorted(values)
        sets, parameters = [], {"p": project, "keys": keys}
        for i, column in enumerate(SEALED_COLUMNS):
            if any(column in values[k] for k in keys):
                parameters[f"from{i}"] = [k for k in keys if column in values[k]]
                parameters[f"to{i}"] = [values[k][column] for k in keys if column in values[k]]
                sets.append(f"{column} = transform(toString(dedup_key), {{from{i}:Array(String)}}, "
                            f"{{to{i}:Array(String)}}, {column})")
        if not sets:
            return
        where = "project = {p:String} AND toString(dedup_key) IN {keys:Array(String)}"
        partitions = [str(p) for (p,) in self.ch.rows(f"SELECT DISTINCT _partition_id FROM events WHERE {where}",
                                                      parameters={"p": project, "keys": keys})]
        self.ch.command(f"UPDATE events SET {', '.join(sets)} WHERE {where}", parameters=parameters,
                        settings={"allow_experimental_lightweight_update": 1})
        self._apply_patches(partitions)

    # --- reads ---------------------------------------------------------------------------
    def of_subject(self, subject_id: str) -> list[dict[str, Any]]:
        """Every event of one subject, oldest first, personal columns as stored (ciphertext)."""
        columns = ["event", "at", "room_id", "message_id", "platform", *SEALED_COLUMNS, "properties"]
        rows = self.ch.rows(f"SELECT {', '.join(columns)} FROM events WHERE subject_id = {{id:UUID}} ORDER BY at",
                            parameters={"id": uuid.UUID(subject_id)})
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def naming(self, project: str, subject_id: str) -> list[dict[str, Any]]:
        """Events of others in the project whose properties name this subject (a ban, a profile
        opened, a reply...: ids of other users are stored there as subject ids), oldest first.
        Reads the project's `properties`, so only for the rare access request and export."""
        columns = ["event", "at", "room_id", "message_id", "properties"]
        rows = self.ch.rows(
            f"SELECT {', '.join(columns)} FROM events WHERE project = {{p:String}} AND subject_id != {{id:UUID}} "
            "AND position(properties, {sid:String}) > 0 ORDER BY at",
            parameters={"p": project, "id": uuid.UUID(subject_id), "sid": subject_id})
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def count_for(self, subject_id: str) -> dict[str, int]:
        rows = self.ch.rows(
            f"SELECT count(), countIf({_ANY_PERSONAL}) FROM events WHERE subject_id = {{id:UUID}}",
            parameters={"id": uuid.UUID(subject_id)},
        )
        total, personal = rows[0]
        return {"rows": int(total), "with_personal_values": int(personal)}
