"""The key hierarchy: key-encryption key versions, the data keys wrapped under them, and the
generation counters that tell processes a key was destroyed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.ids import new_id
from app.models.base import Base


class KeyEncryptionKey(Base):
    """One version of the key-encryption key. The KEK itself is derived from LETHE_SECRET_KEY
    and never stored; `check` (an HMAC of a fixed label under it) tells a wrong secret apart
    from undecryptable data. Retired versions wrap no key once a rotation has finished."""

    __tablename__ = "kek_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]
    check: Mapped[str] = mapped_column(String(64))



class DataKey(Base):
    """A data key, wrapped under a KEK version: one per (owner, purpose). Personal values are
    stored only as ciphertext under such keys, so deleting this row erases them everywhere.

    One B-tree: the rows are the primary key's index (SQLite: WITHOUT ROWID), with no other
    index. An erasure deletes 10,000 keys scattered over the table, and each B-tree a row sits
    in is one more page rewritten per key: with a rowid, an id index and an (owner, purpose)
    index, the commit wrote twice the pages. `id` is not looked up; it is bound into the
    wrapping (app.domain.crypto.key_aad), so a wrapped key moved to another row does not open.

    The primary key is (purpose, owner), in that order: the keys of one purpose sit together.
    Anonymisation destroys analytics keys only, so its deletions fall on the analytics part of
    the table and share pages there, instead of being spread over the pages of every purpose
    (a subject's grace key beside its analytics key). Each statement names its purposes, so
    every lookup is a seek on the primary key."""

    __tablename__ = "data_keys"
    __table_args__ = (PrimaryKeyConstraint("purpose", "owner", name="pk_data_keys"), {"sqlite_with_rowid": False})
    # owner: a subject id, a hold id, "deadletters:<project>:<day>"...
    owner: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(20))  # analytics | grace | content | hold | ...
    id: Mapped[str] = mapped_column(String(36), default=new_id)
    kek_version: Mapped[int] = mapped_column(ForeignKey("kek_versions.version"))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]



class KeyGeneration(Base):
    """A counter per key purpose, moved on by every transaction that destroys keys of that
    purpose (in that transaction). A process keeps the keys it opened while the counter of
    their purpose has not moved: each transaction reads the counters once, so a key destroyed
    anywhere is unusable in every process from its next transaction on (app.services.keys)."""

    __tablename__ = "key_generations"
    purpose: Mapped[str] = mapped_column(String(20), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
