import hashlib
from dataclasses import replace
from datetime import UTC, datetime

from app.domain.audit import (
    GENESIS,
    AuditRecord,
    ChainedEntry,
    chain,
    checkpoint_problem,
    entry_hash,
    parse_checkpoint,
    sign_checkpoint,
    subject_hash,
    verify,
)

AT = datetime(2026, 5, 1, tzinfo=UTC)
KEY = b"k" * 32
CHECKPOINT_KEY = b"c" * 32


def entries(n: int = 5, key: bytes = KEY) -> list[ChainedEntry]:
    records = [AuditRecord("partner:acme", f"action.{i}", "acme", None, {"i": i}) for i in range(n)]
    return chain(0, GENESIS, AT, records, key)


def test_intact_chain_verifies() -> None:
    chained = entries()
    result = verify(chained, KEY)
    assert result.ok and result.entries == 5 and result.first_bad_seq is None
    assert result.head == chained[-1].hash
    assert chained[0].prev_hash == GENESIS and chained[1].prev_hash == chained[0].hash


def test_appending_continues_from_the_head() -> None:
    first = entries(3)
    more = chain(first[-1].seq, first[-1].hash, AT, [AuditRecord("job:purge", "x")], KEY)
    assert more[0].seq == 4
    assert verify([*first, *more], KEY).ok


def test_edited_entry_is_named() -> None:
    chained = entries()
    chained[2] = replace(chained[2], details={"i": 99})
    assert verify(chained, KEY).first_bad_seq == 3


def test_edited_entry_with_recomputed_hash_breaks_the_next_link() -> None:
    chained = entries()
    forged = chain(chained[1].seq, chained[1].hash, AT, [AuditRecord("partner:acme", "forged", "acme")], KEY)[0]
    chained[2] = forged
    assert verify(chained, KEY).first_bad_seq == 4


def test_deleted_entry_is_named() -> None:
    chained = entries()
    del chained[1]
    assert verify(chained, KEY).first_bad_seq == 3


def test_reordered_entries_are_named() -> None:
    chained = entries()
    chained[1], chained[2] = chained[2], chained[1]
    assert verify(chained, KEY).first_bad_seq == 3


def test_subject_hash_is_keyed_and_per_project() -> None:
    h = subject_hash(b"k1", "acme", "u-1")
    assert h == subject_hash(b"k1", "acme", "u-1")
    assert h != subject_hash(b"k2", "acme", "u-1")
    assert h != subject_hash(b"k1", "other", "u-1")
    assert "u-1" not in h


def test_a_chain_recomputed_without_the_key_is_refused() -> None:
    """A database writer edits an entry and recomputes every hash after it, but without the
    secret-derived key: the first recomputed entry is named."""
    chained = entries()
    head = chained[1]
    forged = chain(head.seq, head.hash, AT, [AuditRecord("partner:acme", "forged", "acme"),
                                             *[AuditRecord("partner:acme", f"action.{i}", "acme", None, {"i": i})
                                               for i in range(3, 5)]], b"guessed key" * 3)
    assert verify([*chained[:2], *forged], KEY).first_bad_seq == 3
    plain = [replace(e, hash=hashlib.sha256(b"x").hexdigest()) for e in chained]
    assert verify(plain, KEY).first_bad_seq == 1


def test_entries_before_keying_keep_plain_hashes_and_the_rest_are_keyed() -> None:
    legacy = chain(0, GENESIS, AT, [AuditRecord("operator:cli", "old")], KEY)[0]
    legacy = replace(legacy, hash=entry_hash(1, AT, AuditRecord("operator:cli", "old"), GENESIS, None))
    keyed = chain(1, legacy.hash, AT, [AuditRecord("operator:cli", "new")], KEY)
    assert verify([legacy, *keyed], KEY, keyed_from=2).ok
    assert verify([legacy, *keyed], KEY, keyed_from=1).first_bad_seq == 1


def test_a_checkpoint_detects_truncation_rewrite_and_forgery() -> None:
    chained = entries()
    checkpoint = sign_checkpoint(CHECKPOINT_KEY, 4, chained[3].hash, AT)
    assert checkpoint_problem(CHECKPOINT_KEY, checkpoint, chained[3].hash) is None
    truncated = checkpoint_problem(CHECKPOINT_KEY, checkpoint, None)
    assert truncated is not None and "truncated" in truncated
    rewritten = checkpoint_problem(CHECKPOINT_KEY, checkpoint, "0" * 64)
    assert rewritten is not None and "rewritten" in rewritten
    forged = replace(checkpoint, hash="0" * 64)
    assert "forged" in (checkpoint_problem(CHECKPOINT_KEY, forged, "0" * 64) or "")
    assert "forged" in (checkpoint_problem(b"other" * 8, checkpoint, chained[3].hash) or "")
    assert parse_checkpoint(checkpoint.as_dict()) == checkpoint
