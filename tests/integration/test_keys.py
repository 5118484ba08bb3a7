"""The keyring on both dialects: erasure by key destruction only works if these hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import sessionmaker

from app.domain.audit import CHAIN_LABEL
from app.domain.crypto import Cipher, Undecryptable, derive_key
from app.models import AuditEntry, KeyEncryptionKey
from app.services import key_compaction
from app.services import keys as keys_module
from app.services.key_compaction import CompactionFailed, KeyCompaction
from app.services.keys import KeyringError, KeyService
from app.services.operator_views import KeysRotated
from app.stores.sql.keys import KeyTableCompaction
from app.stores.sql.uow import SqlUnitOfWork
from tests.conftest import SECRET, FakeClock

CHAIN_KEY = derive_key(SECRET, CHAIN_LABEL)
UowFactory = Callable[[], SqlUnitOfWork]


@pytest.fixture
def uow(engine: Engine, clock: FakeClock) -> UowFactory:
    factory = sessionmaker(engine, expire_on_commit=False)
    return lambda: SqlUnitOfWork(factory, clock, CHAIN_KEY)


def service(uow: UowFactory, clock: FakeClock, secret: bytes = SECRET, engine: Engine | None = None) -> KeyService:
    """A new KeyService stands for another process: its own cache, same database."""
    return KeyService(uow, clock, secret, KeyCompaction(KeyTableCompaction(engine)) if engine is not None else None)


def ciphers(keys: KeyService, uow: UowFactory, owners: list[str], purpose: str = "analytics", *,
            create: bool = False) -> dict[str, Cipher]:
    with uow() as u:
        found = keys.ciphers(u, owners, purpose, create=create)
        u.commit()
    return found


def encrypt_for(keys: KeyService, uow: UowFactory, owner: str, value: str, purpose: str = "analytics") -> str:
    return ciphers(keys, uow, [owner], purpose, create=True)[owner].encrypt(value)


def destroy(keys: KeyService, uow: UowFactory, owners: list[str], purpose: str | None = None) -> int:
    with uow() as u:
        n = len(keys.destroy(u, owners, purpose))
        u.commit()
    return n


def key_rows(uow: UowFactory) -> dict[tuple[str, str], tuple[int, bytes]]:
    with uow() as u:
        rows = u.session.execute(text("SELECT owner, purpose, kek_version, wrapped FROM data_keys"))
        return {(r.owner, r.purpose): (r.kek_version, bytes(r.wrapped)) for r in rows}


# --- create or get ---------------------------------------------------------------------------


def test_create_or_get_is_idempotent_and_survives_another_process(uow: UowFactory, clock: FakeClock) -> None:
    keys = service(uow, clock)
    created = ciphers(keys, uow, ["s-1", "s-2", "s-1"], create=True)
    assert sorted(created) == ["s-1", "s-2"]
    token = created["s-1"].encrypt("Zoë")

    again = ciphers(keys, uow, ["s-1", "s-2"], create=True)
    elsewhere = ciphers(service(uow, clock), uow, ["s-1", "s-2", "s-3"])  # create=False
    assert again["s-1"].decrypt(token) == "Zoë"
    assert elsewhere["s-1"].decrypt(token) == "Zoë"
    assert "s-3" not in elsewhere  # no key, no cipher: that is what erasure relies on
    with pytest.raises(Undecryptable):
        elsewhere["s-2"].decrypt(token)  # one key per owner
    assert set(key_rows(uow)) == {("s-1", "analytics"), ("s-2", "analytics")}


def test_purposes_are_separate_keys(uow: UowFactory, clock: FakeClock) -> None:
    keys = service(uow, clock)
    token = encrypt_for(keys, uow, "s-1", "value", purpose="grace")
    analytics = ciphers(keys, uow, ["s-1"], "analytics", create=True)["s-1"]
    with pytest.raises(Undecryptable):
        analytics.decrypt(token)
    with pytest.raises(ValueError, match="unknown key purpose"):
        ciphers(keys, uow, ["s-1"], "marketing")


def test_concurrent_creation_ends_with_one_key_that_every_writer_used(uow: UowFactory, clock: FakeClock) -> None:
    """Eight 'processes' ask for the same new owner's key at once: one key is stored, and
    every token any of them wrote opens with it (no writer kept a key that lost the race)."""
    writers = 8
    barrier = threading.Barrier(writers)
    tokens: list[str] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            keys = service(uow, clock)
            barrier.wait(timeout=10)
            with uow() as u:
                cipher = keys.ciphers(u, ["shared", f"own-{i}"], "analytics", create=True)["shared"]
                token = cipher.encrypt(f"value {i}")
                u.commit()
            tokens.append(token)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    rows = key_rows(uow)
    assert len([k for k in rows if k[0] == "shared"]) == 1
    assert len(rows) == writers + 1
    final = ciphers(service(uow, clock), uow, ["shared"])["shared"]
    assert sorted(final.decrypt(t) for t in tokens) == sorted(f"value {i}" for i in range(writers))


# --- destruction -----------------------------------------------------------------------------


def test_destroy_makes_data_undecryptable_even_under_a_new_key(uow: UowFactory, clock: FakeClock) -> None:
    keys = service(uow, clock)
    token = encrypt_for(keys, uow, "victim", "Zoë Müller")
    grace = encrypt_for(keys, uow, "victim", "kept for grace", purpose="grace")
    bystander = encrypt_for(keys, uow, "bystander", "Bob")

    assert destroy(keys, uow, ["victim"], "analytics") == 1
    assert "victim" not in ciphers(keys, uow, ["victim"])  # this process forgot it at once
    assert "victim" not in ciphers(service(uow, clock), uow, ["victim"])
    assert ciphers(keys, uow, ["victim"], "grace")["victim"].decrypt(grace) == "kept for grace"
    renewed = ciphers(keys, uow, ["victim"], create=True)["victim"]
    with pytest.raises(Undecryptable):
        renewed.decrypt(token)
    assert ciphers(keys, uow, ["bystander"])["bystander"].decrypt(bystander) == "Bob"

    assert destroy(keys, uow, ["victim"]) == 2  # every purpose: the new analytics key and grace
    assert ciphers(keys, uow, ["victim"], "grace") == {}
    assert set(key_rows(uow)) == {("bystander", "analytics")}


def test_a_key_from_a_rolled_back_transaction_never_encrypts_anything(uow: UowFactory, clock: FakeClock) -> None:
    """The key row of a rolled-back transaction does not exist: had this process cached its
    key, the next values would be encrypted under a key that nobody can ever read."""
    keys = service(uow, clock)
    with uow() as u:
        lost = keys.ciphers(u, ["s-1"], "analytics", create=True)["s-1"].encrypt("lost")
        assert keys.ciphers(u, ["s-1"], "analytics", create=True)  # read back in the same transaction
        u.rollback()
    assert key_rows(uow) == {}
    token = encrypt_for(keys, uow, "s-1", "kept")
    stored = ciphers(service(uow, clock), uow, ["s-1"])["s-1"]
    assert stored.decrypt(token) == "kept"
    with pytest.raises(Undecryptable):
        stored.decrypt(lost)


# --- the per-process cache -------------------------------------------------------------------


def test_a_key_destroyed_elsewhere_is_unusable_here_from_the_next_transaction(
        uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's destruction moves the purpose's generation in its own transaction:
    this process's next transaction sees it and opens no cached copy, however long the cache."""
    monkeypatch.setattr(keys_module, "KEY_CACHE_SECONDS", 3600.0)
    here, there = service(uow, clock), service(uow, clock)
    encrypt_for(there, uow, "s-1", "x")
    encrypt_for(there, uow, "s-2", "y")
    assert {"s-1", "s-2"} <= set(ciphers(here, uow, ["s-1", "s-2"]))  # now cached here
    with uow() as u:  # the cache is real: a transaction reads no key row for what it holds
        u.session.execute(text("DELETE FROM data_keys WHERE owner = 's-2'"))  # behind the service's back
        assert set(here.ciphers(u, ["s-2"], "analytics", create=False)) == {"s-2"}
        u.rollback()
    destroy(there, uow, ["s-1"])
    assert "s-1" not in ciphers(here, uow, ["s-1"])
    assert "s-2" in ciphers(here, uow, ["s-2"])  # a bystander's key is opened again, from its row
    with uow() as u:
        assert u.keys.generations()["analytics"] == 1


def test_a_destruction_that_rolls_back_moves_no_generation(uow: UowFactory, clock: FakeClock) -> None:
    keys = service(uow, clock)
    encrypt_for(keys, uow, "s-1", "x")
    with uow() as u:
        keys.destroy(u, ["s-1"], "analytics")
        u.rollback()
    with uow() as u:
        assert u.keys.generations() == {}
    assert "s-1" in ciphers(service(uow, clock), uow, ["s-1"])


def test_an_opened_key_is_opened_again_after_the_cache_lifetime(
        uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "KEY_CACHE_SECONDS", 1.0)
    keys = service(uow, clock)
    encrypt_for(keys, uow, "s-1", "x")
    assert "s-1" in ciphers(keys, uow, ["s-1"])
    with uow() as u:
        u.session.execute(text("DELETE FROM data_keys WHERE owner = 's-1'"))  # no generation moves
        u.commit()
    time.sleep(1.1)
    assert "s-1" not in ciphers(keys, uow, ["s-1"])


def test_absence_is_cached_for_readers_but_never_stops_a_writer(
        uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "ABSENCE_CACHE_SECONDS", 1.0)
    here, there = service(uow, clock), service(uow, clock)
    assert ciphers(here, uow, ["s-1"]) == {}  # "no such key" is now cached here
    token = encrypt_for(there, uow, "s-1", "x")
    assert ciphers(here, uow, ["s-1"]) == {}
    assert ciphers(here, uow, ["s-1"], create=True)["s-1"].decrypt(token) == "x"  # no second key
    assert len(key_rows(uow)) == 1
    time.sleep(1.1)
    assert ciphers(here, uow, ["s-1"])["s-1"].decrypt(token) == "x"


def test_a_key_this_process_creates_is_readable_here_at_once(
        uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold's key is read (absent) before the hold's data is taken under it, then created:
    readers in the same process must not go on seeing the cached absence."""
    monkeypatch.setattr(keys_module, "KEY_CACHE_SECONDS", 60.0)
    keys = service(uow, clock)
    assert ciphers(keys, uow, ["h-1"], "hold") == {}  # "no such key" is now cached
    token = encrypt_for(keys, uow, "h-1", "x", "hold")
    assert ciphers(keys, uow, ["h-1"], "hold")["h-1"].decrypt(token) == "x"


def test_the_cache_is_bounded(uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "KEY_CACHE_SIZE", 10)
    keys = service(uow, clock)
    owners = [f"s-{i}" for i in range(25)]
    for start in range(0, 25, 4):
        ciphers(keys, uow, owners[start:start + 4], create=True)
    ciphers(keys, uow, owners)
    ciphers(keys, uow, owners[:7])
    assert 0 < len(keys._cache) <= 10  # the bound is the property under test


# --- rotation ---------------------------------------------------------------------------------


def _some_keys(uow: UowFactory, clock: FakeClock, n: int) -> dict[tuple[str, str], str]:
    keys = service(uow, clock)
    tokens = {}
    for i in range(n):
        purpose = "analytics" if i % 3 else "grace"
        tokens[(f"s-{i:03d}", purpose)] = encrypt_for(keys, uow, f"s-{i:03d}", f"value {i}", purpose)
    return tokens


def _assert_all_decrypt(uow: UowFactory, clock: FakeClock, tokens: dict[tuple[str, str], str]) -> None:
    keys = service(uow, clock)
    for (owner, purpose), token in tokens.items():
        assert ciphers(keys, uow, [owner], purpose)[owner].decrypt(token) == f"value {int(owner[2:])}"


def test_rotate_rewraps_every_key_and_old_tokens_still_decrypt(
        uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "REWRAP_BATCH", 4)
    tokens = _some_keys(uow, clock, 11)
    before = key_rows(uow)
    assert {v for v, _ in before.values()} == {1}
    steps: list[tuple[int, int]] = []

    summary = service(uow, clock).rotate(lambda done, total: steps.append((done, total)))

    assert summary == KeysRotated(kek_version=2, rewrapped=11)
    after = key_rows(uow)
    assert set(after) == set(before)
    assert {v for v, _ in after.values()} == {2}
    assert all(after[k][1] != before[k][1] for k in before)
    assert steps == [(4, 11), (8, 11), (11, 11)]
    _assert_all_decrypt(uow, clock, tokens)
    with uow() as u:
        versions = {k.version: k.retired_at for k in u.session.scalars(select(KeyEncryptionKey))}
        entry = u.session.scalars(select(AuditEntry).where(AuditEntry.action == "keys.rotated")).one()
    assert versions == {1: clock.now, 2: None}
    assert entry.details == {"kek_version": 2, "rewrapped": 11, "retired_versions": 1}
    assert entry.subject is None


def test_rotation_interrupted_midway_is_readable_and_finished_by_running_it_again(
        uow: UowFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "REWRAP_BATCH", 4)
    tokens = _some_keys(uow, clock, 10)

    def crash(done: int, total: int) -> None:
        raise KeyboardInterrupt("operator pressed Ctrl-C")

    with pytest.raises(KeyboardInterrupt):
        service(uow, clock).rotate(crash)
    assert sorted(v for v, _ in key_rows(uow).values()) == [1] * 6 + [2] * 4  # mixed versions
    _assert_all_decrypt(uow, clock, tokens)

    summary = service(uow, clock).rotate()
    assert summary == KeysRotated(kek_version=3, rewrapped=10)
    assert {v for v, _ in key_rows(uow).values()} == {3}
    _assert_all_decrypt(uow, clock, tokens)


def test_a_wrong_secret_is_named_not_mistaken_for_erased_data(uow: UowFactory, clock: FakeClock) -> None:
    _some_keys(uow, clock, 2)
    wrong = service(uow, clock, secret=b"not-the-secret")
    with pytest.raises(KeyringError, match="LETHE_SECRET_KEY does not match") as caught:
        ciphers(wrong, uow, ["s-001"])
    assert "not-the-secret" not in str(caught.value)
    with pytest.raises(KeyringError, match="LETHE_SECRET_KEY does not match"):
        ciphers(wrong, uow, ["new-owner"], create=True)
    with pytest.raises(KeyringError, match="LETHE_SECRET_KEY does not match"):
        wrong.rotate()
    with uow() as u:
        assert [k.version for k in u.session.scalars(select(KeyEncryptionKey))] == [1]  # nothing changed


def test_an_altered_key_row_is_reported(uow: UowFactory, clock: FakeClock) -> None:
    _some_keys(uow, clock, 2)
    with uow() as u:
        u.session.execute(text("UPDATE data_keys SET owner = 'thief' WHERE owner = 's-001'"))
        u.commit()
    with pytest.raises(KeyringError, match="altered"):
        ciphers(service(uow, clock), uow, ["thief"])


# --- compaction: destroyed keys leave the files -----------------------------------------------


def _sqlite_bytes(engine: Engine) -> bytes:
    path = Path(str(engine.url.database))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def _pg_bytes(engine: Engine, *paths: str) -> bytes:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))
        return b"".join(conn.execute(text("SELECT pg_read_binary_file(:p, 0, 1000000000, true)"), {"p": p}).scalar()
                        or b"" for p in paths)


@contextmanager
def _older_snapshot(engine: Engine) -> Iterator[None]:
    """A REPEATABLE READ transaction whose snapshot is taken now and held for the block."""
    with engine.connect() as reader:
        reader.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        reader.execute(text("SELECT count(*) FROM audit_head")).scalar()
        yield


def _pg_path(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT pg_relation_filepath('data_keys')")).scalar())


def test_compact_removes_destroyed_keys_from_the_table_files(uow: UowFactory, clock: FakeClock,
                                                             engine: Engine) -> None:
    keys = service(uow, clock, engine=engine)
    ciphers(keys, uow, [f"bystander-{i}" for i in range(20)], create=True)
    ciphers(keys, uow, ["victim"], create=True)  # written last: the layout plain VACUUM leaves readable
    rows = key_rows(uow)
    victim = rows[("victim", "analytics")][1]
    bystander = rows[("bystander-7", "analytics")][1]
    sqlite = engine.dialect.name == "sqlite"
    first_path = "" if sqlite else _pg_path(engine)

    def stored() -> bytes:
        return _sqlite_bytes(engine) if sqlite else _pg_bytes(engine, first_path, _pg_path(engine))

    before = stored()
    assert (victim in before, bystander in before) == (True, True)  # the check sees a key that is there

    destroy(keys, uow, ["victim"])
    keys.compaction.compact()

    after = stored()
    assert (victim in after, bystander in after) == (False, True)  # (no file dump in the failure)
    if sqlite:
        wal = Path(f"{engine.url.database}-wal")
        assert not wal.exists() or wal.stat().st_size == 0


def test_the_compaction_job_compacts_what_any_process_changed_and_only_then(
        uow: UowFactory, clock: FakeClock, engine: Engine) -> None:
    """PostgreSQL: the job reads the key table's change counter (deletes and re-wraps by any
    process, not a flag of its own) and runs VACUUM FULL only when it moved. SQLite: it
    checkpoints every time (cheap)."""
    job = service(uow, clock, engine=engine)  # the worker's keyring
    elsewhere = service(uow, clock, engine=engine)  # another process: the job never hears of it
    ciphers(elsewhere, uow, ["bystander", "victim"], create=True)
    victim = key_rows(uow)[("victim", "analytics")][1]
    assert job.compaction.if_changed() == "compacted"  # its first run: nothing known yet
    if engine.dialect.name == "sqlite":
        assert job.compaction.if_changed() == "compacted"
        return

    def until(compacts: bool) -> None:  # a backend reports its counts within seconds of its commit
        deadline = time.monotonic() + 15
        while (job.compaction.if_changed() == "compacted") != compacts:
            assert time.monotonic() < deadline, f"the job never {'compacted' if compacts else 'settled'}"
            time.sleep(0.2)

    engine.dispose()  # the fixture emptied the tables with DELETEs: their counts arrive when its backends end
    until(compacts=False)  # nothing changed since the last run
    destroy(elsewhere, uow, ["victim"])
    until(compacts=True)
    assert victim not in _pg_bytes(engine, _pg_path(engine))
    assert job.compaction.if_changed() == "unchanged"


def test_compact_waits_for_older_snapshots_that_would_keep_a_destroyed_key(
        uow: UowFactory, clock: FakeClock, engine: Engine) -> None:
    """Measured: VACUUM FULL copies a deleted row that an older open snapshot can still see."""
    if engine.dialect.name != "postgresql":
        pytest.skip("snapshots holding deleted rows are PostgreSQL's MVCC")
    keys = service(uow, clock, engine=engine)
    ciphers(keys, uow, ["bystander", "victim"], create=True)
    victim = key_rows(uow)[("victim", "analytics")][1]
    with _older_snapshot(engine):  # e.g. a long report, or an autovacuum ANALYZE
        destroy(keys, uow, ["victim"])
        with pytest.raises(CompactionFailed, match="transactions older than the key deletion"):
            keys.compaction.compact(wait_seconds=0.2)
    keys.compaction.compact(wait_seconds=5)
    assert victim not in _pg_bytes(engine, _pg_path(engine))


def test_a_compaction_blocked_by_an_older_snapshot_is_reported_and_retried(
        uow: UowFactory, clock: FakeClock, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job says `postponed` (its summary counts a failure) and compacts on its next run."""
    if engine.dialect.name != "postgresql":
        pytest.skip("snapshots holding deleted rows are PostgreSQL's MVCC")
    monkeypatch.setattr(key_compaction, "COMPACT_WAIT_SECONDS", 0.2)
    keys = service(uow, clock, engine=engine)
    ciphers(keys, uow, ["bystander", "victim"], create=True)
    with _older_snapshot(engine):
        destroy(keys, uow, ["victim"])
        assert keys.compaction.if_changed() == "postponed"
    # the usual wait again: other test workers' transactions on this server count too
    monkeypatch.setattr(key_compaction, "COMPACT_WAIT_SECONDS", 30.0)
    assert keys.compaction.if_changed() == "compacted"
