"""Versioned ClickHouse DDL, applied in order by `lethe migrate` (and `lethe serve` at start).

Never edit a released version: add a new one. `schema_versions` records what was applied.
"""

from __future__ import annotations

import re

from app.stores.clickhouse.client import ClickHouse

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "events", [
        # Keyed by Lethe's random subject id, never the platform's user id. Personal values an
        # event carries live in their own columns so that erasure can blank them; the rest of
        # `value` stays queryable in `properties`. Daily partitions let retention drop whole days.
        # The block number/offset columns enable lightweight UPDATE (patch parts); the
        # deduplication window makes a retried insert with the same token a no-op. Parts replaced
        # by an erasure leave the disk ~5 s later (by default ClickHouse keeps them 8 minutes,
        # and its idle cleanup backs off to 5 minutes); merged and mutated parts are fsynced,
        # so the old ones are not needed to survive a crash.
        """
        CREATE TABLE IF NOT EXISTS events (
            project LowCardinality(String),
            event LowCardinality(String),
            at DateTime64(3, 'UTC'),
            received_at DateTime64(3, 'UTC'),
            subject_id UUID,
            actor_kind LowCardinality(String),
            dedup_key FixedString(32),
            room_id String,
            message_id String,
            platform LowCardinality(String),
            user_name String,
            nickname String,
            decrypted_user_id String,
            text String,
            source_url String,
            user_agent String,
            ip String,
            url String,
            properties String
        )
        ENGINE = MergeTree
        PARTITION BY toYYYYMMDD(at)
        ORDER BY (project, subject_id, at)
        SETTINGS enable_block_number_column = 1, enable_block_offset_column = 1,
                 non_replicated_deduplication_window = 10000,
                 old_parts_lifetime = 5, cleanup_delay_period = 1, max_cleanup_delay_period = 1,
                 cleanup_delay_period_random_add = 0, min_compressed_bytes_to_fsync_after_merge = 1
        """,
    ]),
    (2, "daily_metrics", [
        # The platform's back-office metrics, per project and day, computed while the raw events
        # are still there; they hold counts only (no subject ids), so they outlive the 13-month cap.
        """
        CREATE TABLE IF NOT EXISTS daily_metrics (
            project LowCardinality(String),
            day Date,
            dau UInt64,
            wau UInt64,
            mau UInt64,
            messages UInt64,
            reactions UInt64,
            events UInt64,
            computed_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(computed_at)
        ORDER BY (project, day)
        """,
    ]),
    (3, "events.extra", [
        # Every property of an event that has no column of its own, as one JSON object sealed
        # under the same key as its personal columns (before this version they were stored in
        # plaintext in `properties`, which now holds only the subject ids of the users an event
        # names). Old rows keep their `properties`: the 13-month cap removes them.
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS extra String DEFAULT '' AFTER url",
    ]),
    (4, "events.flags", [
        # Whether a row holds any personal value, and any that is not ciphertext (left by
        # versions before encryption at the door), worked out once per row as it is written.
        # An erasure's evidence counts a batch's rows from these two bytes instead of reading
        # every sealed column of every granule its subjects touch (about 2.4 s at 10M rows).
        # Rows written before this version get them computed when read.
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS has_personal UInt8 MATERIALIZED "
        "(user_name != '' OR nickname != '' OR decrypted_user_id != '' OR text != '' OR source_url != '' "
        "OR user_agent != '' OR ip != '' OR url != '' OR extra != '')",
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS has_plaintext UInt8 MATERIALIZED "
        "((user_name != '' AND NOT startsWith(user_name, 'v1.')) "
        "OR (nickname != '' AND NOT startsWith(nickname, 'v1.')) "
        "OR (decrypted_user_id != '' AND NOT startsWith(decrypted_user_id, 'v1.')) "
        "OR (text != '' AND NOT startsWith(text, 'v1.')) OR (source_url != '' AND NOT startsWith(source_url, 'v1.')) "
        "OR (user_agent != '' AND NOT startsWith(user_agent, 'v1.')) OR (ip != '' AND NOT startsWith(ip, 'v1.')) "
        "OR (url != '' AND NOT startsWith(url, 'v1.')) OR (extra != '' AND NOT startsWith(extra, 'v1.')))",
    ]),
]


_ENGINES = re.compile(r"ENGINE = (MergeTree|ReplacingMergeTree)\b")


def for_cluster(statement: str, cluster: str | None) -> str:
    """A migration's DDL as it runs: on a cluster (LETHE_CLICKHOUSE_CLUSTER) the MergeTree family
    becomes its Replicated* twin. Without arguments: in a Replicated database each table gets
    its own Keeper path (by uuid), and the database replicates the DDL to every replica."""
    return statement if cluster is None else _ENGINES.sub(r"ENGINE = Replicated\1", statement)


def migrate(ch: ClickHouse) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    ch.command(for_cluster(
        "CREATE TABLE IF NOT EXISTS schema_versions (version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree ORDER BY version", ch.cluster))
    done = {int(row[0]) for row in ch.rows("SELECT version FROM schema_versions")}
    applied = []
    for version, name, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            ch.command(for_cluster(statement, ch.cluster))
        ch.insert("schema_versions", [[version, name]], ["version", "name"])
        applied.append(version)
    return applied
