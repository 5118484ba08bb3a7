"""The keyring: data keys per (owner, purpose), wrapped under versioned key-encryption keys.

Erasure is key destruction: personal values are stored only as ciphertext under their owner's
data key, so deleting the key row makes them unreadable in every store, backups and replicas
included once the key's own copies are gone. Hence three rules here:
- a destroyed key is unusable in every process from that process's next transaction: every
  transaction that destroys keys moves their purpose's generation on (`key_generations`, in
  the same transaction), and a process uses a cached key only while the generation it was
  opened under is still the one its current transaction reads (once per transaction). Cached
  keys are also dropped after KEY_CACHE_SECONDS, and a key's absence after ABSENCE_CACHE_SECONDS;
- a key created in a transaction is cached only once another transaction has read it back
  (committed): a rolled-back key must never encrypt anything;
- deleted key rows must also leave the table's files: app.services.key_compaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date
from typing import Any

import structlog

from app.domain.audit import AuditRecord
from app.domain.crypto import (
    TOKEN_PREFIX,
    Cipher,
    Undecryptable,
    derive_kek,
    kek_check,
    kek_matches,
    new_data_key,
    unwrap,
    wrap,
)
from app.domain.ids import new_id
from app.ports import (
    Clock,
    KekVersion,
    StoredKey,
    UnitOfWork,
    UnitOfWorkFactory,
)
from app.services.errors import Broken
from app.services.key_compaction import KeyCompaction
from app.services.operator_views import KeysRotated

log = structlog.get_logger(__name__)
ANALYTICS = "analytics"  # a subject's events' personal values: destroyed when it is anonymised
GRACE = "grace"  # what grace keeps restorable (profile, IPs, reasons): destroyed at purge
DEAD_LETTERS = "dead_letters"  # rejected bodies, one key per project and day: destroyed by retention
CONTENT = "content"  # a subject's message texts: destroyed by immediate erasure and offboarding (after
# a grace-mode erasure the messages stay, anonymous, so their texts stay readable)
MESSAGE_TEXT_AAD = b"messages.text"  # what a sealed message text is bound to
HOLD = "hold"  # what a room or message hold keeps (owner: the hold): destroyed once the hold ends
CALLBACK = "callback"  # the user id in one callback delivery (owner: the delivery): goes with it
PURPOSES = frozenset({ANALYTICS, GRACE, CONTENT, HOLD, DEAD_LETTERS, CALLBACK})
KEY_CACHE_SECONDS = 60.0  # an opened key is opened again after this long, even if its generation stands
ABSENCE_CACHE_SECONDS = 5.0  # "no key" is believed this long (a key created elsewhere is seen within it)
KEY_CACHE_SIZE = 100_000  # entries; the cache is emptied when full
REWRAP_BATCH = 1_000  # keys per rotation transaction
# uow.info entries (this transaction only): keys opened, (owner, purpose) -> Cipher; keys created
OPENED_IN_TRANSACTION = "lethe.keys_opened"
_CREATED = "lethe.keys_created"
_GENERATIONS = "lethe.key_generations"  # purpose -> generation, as this transaction read them

Progress = Callable[[int, int], None]


class KeyringError(Broken):
    """The keyring cannot work as configured (e.g. LETHE_SECRET_KEY is not the one that
    wrapped the keys). Named plainly; never carries key material."""


def key_aad(key_id: str, owner: str, purpose: str) -> bytes:
    """What a wrapped key is bound to: its row. Moving it to another row or owner breaks it."""
    return f"lethe/data-key/{key_id}/{owner}/{purpose}".encode()


class KeyService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, secret_key: bytes,
                 compaction: KeyCompaction | None = None) -> None:
        self._uow = uow
        self.compaction = compaction or KeyCompaction(None)  # told of every destruction here
        self._clock = clock
        self._secret = secret_key
        self._keks: dict[int, bytes] = {}  # version -> KEK, once checked against its row
        # (owner, purpose) -> (until, the Cipher or None for "no key", the purpose's generation then)
        self._cache: dict[tuple[str, str], tuple[float, Cipher | None, int]] = {}
        self._lock = threading.Lock()

    # --- reading and creating keys -------------------------------------------------------

    def ciphers(self, uow: UnitOfWork, owners: Sequence[str], purpose: str, *,
                create: bool) -> dict[str, Cipher]:
        """owner -> Cipher under its `purpose` key, inside the caller's transaction. With
        `create`, owners without a key get one (wrapped under the current KEK); without it they
        are absent from the result: their data is unreadable, which is the point of erasure."""
        _check_purpose(purpose)
        wanted = list(dict.fromkeys(owners))
        generation = self._generation(uow, purpose)
        found, unknown = self._from_cache(wanted, purpose, generation, trust_absence=not create)
        if unknown:  # keys this transaction created or read already (not shared: it may roll back)
            mine: dict[tuple[str, str], Cipher] = uow.info.setdefault(OPENED_IN_TRANSACTION, {})
            found.update({o: c for o in unknown if (c := mine.get((o, purpose))) is not None})
            unknown = [o for o in unknown if o not in found]
        if unknown:
            loaded = self._load(uow, unknown, purpose, generation, create=create)
            mine.update({(o, purpose): c for o, c in loaded.items()})
            found.update(loaded)
        return found

    def _generation(self, uow: UnitOfWork, purpose: str) -> int:
        """The purpose's generation as this transaction sees it: read once per transaction, and
        before any key is read in it, so a key loaded after a destruction committed is never
        remembered under the generation before it."""
        generations: dict[str, int] | None = uow.info.get(_GENERATIONS)
        if generations is None:
            generations = uow.info[_GENERATIONS] = uow.keys.generations()
        return generations.get(purpose, 0)

    def new_ciphers(self, uow: UnitOfWork, owners: Sequence[str], purpose: str) -> dict[str, Cipher]:
        """Keys for owners that cannot have one yet (ids this transaction has just made up): as
        `ciphers(create=True)` without looking for existing keys first."""
        _check_purpose(purpose)
        made = self._made(uow, list(dict.fromkeys(owners)), purpose, fresh=True)
        mine: dict[tuple[str, str], Cipher] = uow.info.setdefault(OPENED_IN_TRANSACTION, {})
        mine.update({(o, purpose): c for o, c in made.items()})
        return made

    def cipher(self, uow: UnitOfWork, owner: str, purpose: str) -> Cipher:
        """One owner's Cipher, its key created if it has none (inside the caller's transaction)."""
        return self.ciphers(uow, [owner], purpose, create=True)[owner]

    def _from_cache(self, owners: Sequence[str], purpose: str, generation: int, *,
                    trust_absence: bool) -> tuple[dict[str, Cipher], list[str]]:
        now = time.monotonic()
        found: dict[str, Cipher] = {}
        unknown: list[str] = []
        for owner in owners:
            entry = self._cache.get((owner, purpose))
            if (entry is None or entry[0] <= now or entry[2] != generation
                    or (entry[1] is None and not trust_absence)):
                unknown.append(owner)
            elif entry[1] is not None:
                found[owner] = entry[1]
        return found, unknown

    def _load(self, uow: UnitOfWork, owners: Sequence[str], purpose: str, generation: int, *,
              create: bool) -> dict[str, Cipher]:
        stored = uow.keys.get(owners, purpose)
        created: set[tuple[str, str]] = uow.info.setdefault(_CREATED, set())
        ciphers = {owner: self._open(uow, key) for owner, key in stored.items()}
        self._remember(purpose, generation, {o: c for o, c in ciphers.items() if (o, purpose) not in created},
                       absent=[] if create else [o for o in owners if o not in stored])
        missing = [o for o in owners if o not in stored]
        if create and missing:
            ciphers.update(self._made(uow, missing, purpose))
        return ciphers

    def _made(self, uow: UnitOfWork, owners: Sequence[str], purpose: str, *, fresh: bool = False) -> dict[str, Cipher]:
        """New keys for `owners` (where a concurrent transaction won, its key), as Ciphers:
        ours from the data key we have just made, not by unwrapping it again. `fresh`: the
        owners are ids this transaction made up, so no other can have won: a plain insert."""
        created: set[tuple[str, str]] = uow.info.setdefault(_CREATED, set())
        version = self._current_version(uow)
        kek = self._keks[version]
        now = self._clock()
        rows, plain, ids = [], {}, {}
        for owner in sorted(owners):  # one lock order for every writer: no deadlock between batches
            key_id, data_key = new_id(), new_data_key()
            plain[key_id], ids[owner] = data_key, key_id
            rows.append({"id": key_id, "owner": owner, "purpose": purpose, "kek_version": version,
                         "wrapped": wrap(kek, data_key, key_aad(key_id, owner, purpose)), "created_at": now})
        ciphers = {}
        if fresh:
            uow.keys.insert_new(rows)
            created.update((owner, purpose) for owner in owners)
            return {owner: Cipher(plain[key_id]) for owner, key_id in ids.items()}
        for key in uow.keys.create_missing(rows):
            ciphers[key.owner] = Cipher(plain[key.id]) if key.id in plain else self._open(uow, key)
            created.add((key.owner, purpose))
        with self._lock:  # an absence cached by an earlier read no longer holds in this process
            for owner in owners:
                self._cache.pop((owner, purpose), None)
        return ciphers

    def _open(self, uow: UnitOfWork, key: StoredKey) -> Cipher:
        kek = self._kek(uow, key.kek_version)
        try:
            return Cipher(unwrap(kek, key.wrapped, key_aad(key.id, key.owner, key.purpose)))
        except Undecryptable:
            raise KeyringError(f"data key {key.id} does not unwrap under key-encryption key version "
                               f"{key.kek_version}: the key row was altered") from None

    def _remember(self, purpose: str, generation: int, ciphers: Mapping[str, Cipher], absent: Sequence[str]) -> None:
        now = time.monotonic()
        entries = [*((owner, (now + KEY_CACHE_SECONDS, cipher, generation)) for owner, cipher in ciphers.items()),
                   *((owner, (now + ABSENCE_CACHE_SECONDS, None, generation)) for owner in absent)][:KEY_CACHE_SIZE]
        with self._lock:
            if len(self._cache) + len(entries) > KEY_CACHE_SIZE:
                self._cache.clear()  # simpler than LRU, and every entry would expire within a minute
            for owner, entry in entries:
                self._cache[(owner, purpose)] = entry

    def forget(self) -> None:
        """Drop every cached key (tests; an operator's emergency)."""
        with self._lock:
            self._cache.clear()

    # --- key-encryption keys -------------------------------------------------------------

    def _kek(self, uow: UnitOfWork, version: int) -> bytes:
        """The KEK of a version on record, checked once against its row's HMAC."""
        kek = self._keks.get(version)
        if kek is None:
            record = uow.keys.kek_versions().get(version)
            if record is None:
                raise KeyringError(f"key-encryption key version {version} is not on record")
            kek = self._verified(record)
        return kek

    def check_secret(self) -> None:
        """Refuse (KeyringError) a LETHE_SECRET_KEY other than the one the stored keys were
        made with, before anything is written: the audit chain, the subjects' keyed hashes and
        the keys all derive from it, so one command run under another secret (a shell without
        the variable makes a new var/secret.key) would write what the real one cannot verify.
        A migrated database with no key-encryption key on record yet gets version 1 from this
        secret (`_current_version`), so the first command pins it; one not migrated passes."""
        with self._uow() as uow:
            if uow.keys.has_keyring():
                self._current_version(uow)
                uow.commit()

    def _verified(self, record: KekVersion) -> bytes:
        kek = derive_kek(self._secret, record.version)
        if not kek_matches(kek, record.check):
            raise KeyringError(f"LETHE_SECRET_KEY does not match key-encryption key version {record.version} "
                               "on record: is this the secret the keys were made with?")
        self._keks[record.version] = kek
        return kek

    def _current_version(self, uow: UnitOfWork) -> int:
        """The newest KEK version, recorded on first use (concurrency-safe), and checked."""
        record = uow.keys.current_kek()
        if record is None:
            uow.keys.add_kek(1, kek_check(derive_kek(self._secret, 1)), self._clock())
            record = uow.keys.current_kek()
            if record is None:  # just inserted, or a concurrent insert won: never happens
                raise KeyringError("no key-encryption key version on record after creating one")
        if record.version not in self._keks:
            self._verified(record)
        return record.version

    # --- destruction, rotation -------------------------------------------------------------

    def destroy(self, uow: UnitOfWork, owners: Sequence[str], purpose: str | None = None) -> list[str]:
        """Delete the owners' keys (one purpose, or all) in the caller's transaction, which
        audits and commits. This process forgets them at once; every other one from its next
        transaction (their purpose's generation moves at commit: app.stores.sql.keys.DataKeys.bump).
        Returns the owners of the keys deleted (one entry per key)."""
        if purpose is not None:
            _check_purpose(purpose)
        purposes = [purpose] if purpose is not None else sorted(PURPOSES)
        self.compaction.destroyed()
        mine = uow.info.get(OPENED_IN_TRANSACTION, {})
        with self._lock:
            for owner in owners:
                for each in purposes:
                    self._cache.pop((owner, each), None)
                    mine.pop((owner, each), None)
        return uow.keys.destroy(owners, purposes)

    def rotate(self, progress: Progress | None = None, *, actor: str = "operator:cli") -> KeysRotated:
        """Add KEK version n+1 and re-wrap every data key under it, a batch per transaction.
        A crash leaves keys under mixed versions, all readable; running again finishes the job
        (it adds one more version and re-wraps whatever is not under it yet)."""
        version = self._add_next_version()
        rewrapped, total = 0, self._count_older(version)
        while True:  # a second pass catches keys created under the old version meanwhile
            done = self._rewrap_pass(version, rewrapped, total, progress)
            rewrapped += done
            if done == 0:
                break
        with self._uow() as uow:
            retired = uow.keys.retire_below(version, self._clock())
            uow.audit(AuditRecord(actor, "keys.rotated", None, None,
                                  {"kek_version": version, "rewrapped": rewrapped, "retired_versions": retired}))
            uow.commit()
        return KeysRotated(kek_version=version, rewrapped=rewrapped)

    def _add_next_version(self) -> int:
        with self._uow() as uow:
            current = self._current_version(uow)  # also checks the secret before anything changes
            for record in uow.keys.kek_versions().values():
                if record.version not in self._keks:
                    self._verified(record)
            version = current + 1
            uow.keys.add_kek(version, kek_check(derive_kek(self._secret, version)), self._clock())
            uow.commit()
        return version

    def _count_older(self, version: int) -> int:
        with self._uow() as uow:
            return sum(n for v, n in uow.keys.count_by_version().items() if v < version)

    def _rewrap_pass(self, version: int, before: int, total: int, progress: Progress | None) -> int:
        kek = self._kek_for(version)
        done, after = 0, None
        while True:
            with self._uow() as uow:
                batch = uow.keys.under_older_versions(version, after, REWRAP_BATCH)
                if not batch:
                    return done
                done += uow.keys.rewrap([(k, version, self._rewrapped(uow, k, kek)) for k in batch])
                uow.commit()
            after = batch[-1]
            if progress is not None:
                progress(before + done, max(total, before + done))

    def _kek_for(self, version: int) -> bytes:
        with self._uow() as uow:
            return self._kek(uow, version)

    def _rewrapped(self, uow: UnitOfWork, key: StoredKey, kek: bytes) -> bytes:
        aad = key_aad(key.id, key.owner, key.purpose)
        try:
            data_key = unwrap(self._kek(uow, key.kek_version), key.wrapped, aad)
        except Undecryptable:
            raise KeyringError(f"data key {key.id} does not unwrap under key-encryption key version "
                               f"{key.kek_version}: the key row was altered") from None
        return wrap(kek, data_key, aad)

    def destroy_day_keys(self, uow: UnitOfWork, purpose: str, project_id: str, before: date | None = None,
                         keep: Collection[date] = ()) -> int:
        """A project's per-day keys of `purpose` (see `day_key_owner`: actor-less events,
        dead letters) for the days before `before`, or all of them, except the days in `keep`
        (held rows stay there): what retention and offboarding destroy. Returns how many."""
        low = day_key_owner(purpose, project_id, None)
        high = day_key_owner(purpose, project_id, before) if before else low + "\uffff"
        kept = {day_key_owner(purpose, project_id, day) for day in keep}
        owners = [o for o in uow.keys.owners_between(low, high, purpose) if o not in kept]
        return len(self.destroy(uow, owners, purpose)) if owners else 0

    def stats(self) -> dict[str, Any]:
        """Keys per KEK version (no key material): what an operator checks after a rotation."""
        with self._uow() as uow:
            return {"keys_by_kek_version": uow.keys.count_by_version()}


def unsealed(cipher: Cipher | Sequence[Cipher] | None, stored: str | None, column: str) -> str | None:
    """A sealed value in plaintext: decrypted (by the first of several ciphers that opens it:
    a subject's key, then the keys of the holds that may have taken it); as it is if written
    before sealing; None when its key is gone (erased) or it does not open."""
    if not stored:
        return None
    if not stored.startswith(TOKEN_PREFIX):
        return stored
    for each in ([] if cipher is None else [cipher] if isinstance(cipher, Cipher) else cipher):
        try:
            return each.decrypt(stored, column.encode())
        except Undecryptable:
            continue
    return None


_DAY_KEY_PREFIX = {ANALYTICS: "events", DEAD_LETTERS: "deadletters"}


def day_key_owner(purpose: str, project_id: str, day: date | None) -> str:
    """The owner of a project's key of one day, for data with no subject: actor-less events
    (`analytics`) and dead letters (`dead_letters`). A None day gives the prefix of them all;
    ISO dates sort as strings, so "before a day" is a range of owners."""
    return f"{_DAY_KEY_PREFIX[purpose]}:{project_id}:{day.isoformat() if day else ''}"


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}; one of {sorted(PURPOSES)}")
