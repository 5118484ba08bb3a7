"""`lethe keys rotate` as an operator runs it: JSON on stdout, progress on stderr, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from app.domain.audit import CHAIN_LABEL
from app.domain.crypto import derive_key
from app.services.keys import KeyService
from app.stores.sql.engine import make_engine
from app.stores.sql.uow import SqlUnitOfWork
from tests.conftest import FakeClock
from tests.jobs.test_cli import lethe

SECRET = "cli-secret-xxxxxxxxxxxxxxxxxxxxxxxx"
CHAIN_KEY = derive_key(SECRET.encode(), CHAIN_LABEL)


def test_keys_rotate_rewraps_every_key_and_names_a_wrong_secret(tmp_path: Path) -> None:
    first = json.loads(lethe(tmp_path, "keys", "rotate", LETHE_SECRET_KEY=SECRET).stdout)
    assert first == {"kek_version": 2, "rewrapped": 0}  # an empty keyring: v1 recorded, then v2

    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'lethe.db'}")
    factory = sessionmaker(engine, expire_on_commit=False)
    clock = FakeClock()
    keys = KeyService(lambda: SqlUnitOfWork(factory, clock, CHAIN_KEY), clock, SECRET.encode())
    with SqlUnitOfWork(factory, clock, CHAIN_KEY) as uow:
        tokens = {o: c.encrypt(f"value of {o}") for o, c in keys.ciphers(uow, ["a", "b", "c"], "analytics",
                                                                            create=True).items()}
        uow.commit()

    rotated = lethe(tmp_path, "keys", "rotate", LETHE_SECRET_KEY=SECRET)
    assert json.loads(rotated.stdout) == {"kek_version": 3, "rewrapped": 3}
    assert "re-wrapped 3/3 data keys" in rotated.stderr
    reader = KeyService(lambda: SqlUnitOfWork(factory, clock, CHAIN_KEY), clock, SECRET.encode())
    with SqlUnitOfWork(factory, clock, CHAIN_KEY) as uow:
        found = reader.ciphers(uow, ["a", "b", "c"], "analytics", create=False)
        assert {o: found[o].decrypt(t) for o, t in tokens.items()} == {o: f"value of {o}" for o in "abc"}
        assert uow.keys.count_by_version() == {3: 3}
    engine.dispose()

    wrong = lethe(tmp_path, "keys", "rotate", check=False, LETHE_SECRET_KEY="another-secret-yyyyyyyyyyyyyyyyyyyy")
    assert wrong.returncode == 2  # a configuration error, refused before anything runs
    assert "LETHE_SECRET_KEY does not match" in wrong.stderr and "another-secret" not in wrong.stderr
    assert wrong.stdout == ""


def test_no_command_writes_under_another_secret_than_the_one_on_record(tmp_path: Path) -> None:
    """A shell without LETHE_SECRET_KEY (a new var/secret.key) or with another one: the audit
    chain, keyed hashes and keys would be written under a secret the service cannot verify.
    Every command that opens the database refuses first, and writes nothing."""
    lethe(tmp_path, "migrate", LETHE_SECRET_KEY=SECRET)
    lethe(tmp_path, "project", "create", "acme", LETHE_SECRET_KEY=SECRET)  # pins the secret
    for argv in (["project", "create", "oops"], ["officer", "create", "olga", "--project", "acme"],
                 ["audit", "verify"], ["jobs", "run", "anonymise"]):
        wrong = lethe(tmp_path, *argv, check=False, LETHE_SECRET_KEY="another-secret-yyyyyyyyyyyyyyyyyyyy")
        assert wrong.returncode == 2, (argv, wrong.stderr)
        assert "configuration error: LETHE_SECRET_KEY does not match" in wrong.stderr
        assert "Traceback" not in wrong.stderr and "another-secret" not in wrong.stderr
    projects = json.loads(lethe(tmp_path, "project", "list", LETHE_SECRET_KEY=SECRET).stdout)
    assert [p["project"] for p in projects] == ["acme"]
    verified = json.loads(lethe(tmp_path, "audit", "verify", LETHE_SECRET_KEY=SECRET).stdout)
    assert verified["ok"] is True
    assert lethe(tmp_path, "policy", "check", LETHE_SECRET_KEY="another-secret-yyyyyyyyyyyyyyyyyyyy").returncode == 0
