from dataclasses import replace
from datetime import UTC, datetime

from app.domain.audit import GENESIS, AuditRecord, chain, subject_hash, verify

AT = datetime(2026, 5, 1, tzinfo=UTC)


def entries(n: int = 5):  # type: ignore[no-untyped-def]
    records = [AuditRecord("partner:acme", f"action.{i}", "acme", None, {"i": i}) for i in range(n)]
    return chain(0, GENESIS, AT, records)


def test_intact_chain_verifies() -> None:
    chained = entries()
    result = verify(chained)
    assert result.ok and result.entries == 5 and result.first_bad_seq is None
    assert result.head == chained[-1].hash
    assert chained[0].prev_hash == GENESIS and chained[1].prev_hash == chained[0].hash


def test_appending_continues_from_the_head() -> None:
    first = entries(3)
    more = chain(first[-1].seq, first[-1].hash, AT, [AuditRecord("job:purge", "x")])
    assert more[0].seq == 4
    assert verify([*first, *more]).ok


def test_edited_entry_is_named() -> None:
    chained = entries()
    chained[2] = replace(chained[2], details={"i": 99})
    assert verify(chained).first_bad_seq == 3


def test_edited_entry_with_recomputed_hash_breaks_the_next_link() -> None:
    chained = entries()
    forged = chain(chained[1].seq, chained[1].hash, AT, [AuditRecord("partner:acme", "forged", "acme")])[0]
    chained[2] = forged
    assert verify(chained).first_bad_seq == 4


def test_deleted_entry_is_named() -> None:
    chained = entries()
    del chained[1]
    assert verify(chained).first_bad_seq == 3


def test_reordered_entries_are_named() -> None:
    chained = entries()
    chained[1], chained[2] = chained[2], chained[1]
    assert verify(chained).first_bad_seq == 3


def test_subject_hash_is_keyed_and_per_project() -> None:
    h = subject_hash(b"k1", "acme", "u-1")
    assert h == subject_hash(b"k1", "acme", "u-1")
    assert h != subject_hash(b"k2", "acme", "u-1")
    assert h != subject_hash(b"k1", "other", "u-1")
    assert "u-1" not in h
