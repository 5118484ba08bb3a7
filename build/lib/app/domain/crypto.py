"""The key hierarchy's primitives (pure): erasure by key destruction rests on these.

LETHE_SECRET_KEY --HKDF(version)--> key-encryption key (KEK, one per version, never stored)
KEK --AES-256-GCM wrap--> data key (one per owner and purpose, stored wrapped in SQL)
data key --AES-256-GCM--> personal values (tokens in SQL and ClickHouse)

Only the `cryptography` package's primitives are used; nothing here is hand-rolled. No key
bytes ever appear in an exception message, a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit GCM nonce, random per encryption
TAG_BYTES = 16
TOKEN_PREFIX = "v1."  # noqa: S105 - a format tag; '.' is not url-safe base64
_PREFIX_LEN = len(TOKEN_PREFIX)
_KEK_INFO = b"lethe/key-encryption-key/v"
_CHECK_LABEL = b"lethe/key-encryption-key/check"


class Undecryptable(ValueError):
    """A token or wrapped key that this key cannot open: wrong or destroyed key, tampering,
    another row's aad, or not a token at all. The message never names anything secret."""


def derive_kek(secret: bytes, version: int) -> bytes:
    """The KEK of one version: derived, never stored, so the database alone opens nothing.
    A new version gives an unrelated key, which is what makes rotation worth doing."""
    if not secret:
        raise ValueError("the secret key is empty")
    if version < 1:
        raise ValueError("KEK versions start at 1")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_KEK_INFO + str(version).encode())
    return hkdf.derive(secret)


def derive_key(secret: bytes, label: bytes) -> bytes:
    """A key for one purpose (`label`), derived from LETHE_SECRET_KEY with HKDF-SHA256."""
    if not secret:
        raise ValueError("the secret key is empty")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(secret)


def kek_check(kek: bytes) -> str:
    """HMAC-SHA256 of a fixed label under the KEK (hex): stored beside each version so that a
    wrong LETHE_SECRET_KEY is reported plainly instead of surfacing as undecryptable data."""
    mac = HMAC(kek, hashes.SHA256())
    mac.update(_CHECK_LABEL)
    return mac.finalize().hex()


def kek_matches(kek: bytes, check: str) -> bool:
    """Whether `check` was made by `kek` (constant-time comparison)."""
    try:
        expected = bytes.fromhex(check)
    except ValueError:
        return False
    mac = HMAC(kek, hashes.SHA256())
    mac.update(_CHECK_LABEL)
    try:
        mac.verify(expected)
    except InvalidSignature:
        return False
    return True


def new_data_key() -> bytes:
    """32 random bytes from the OS: one per owner and purpose."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def wrap(kek: bytes, data_key: bytes, aad: bytes) -> bytes:
    """nonce || ciphertext || tag. `aad` binds the wrapped key to its row (its key id), so a
    wrapped key copied onto another row does not unwrap there."""
    _require_key(kek, "key-encryption key")
    _require_key(data_key, "data key")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, aad)


def unwrap(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    """The data key inside `wrapped`; `Undecryptable` for a wrong KEK, aad or tampered bytes."""
    _require_key(kek, "key-encryption key")
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
        raise Undecryptable("wrapped key has the wrong length")
    try:
        key = AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
    except InvalidTag:
        raise Undecryptable("wrapped key does not open with this key-encryption key") from None
    return key


class Cipher:
    """Encrypts personal values under one data key. Built once per key and reused: the AESGCM
    object is made here, not per call, since ingest encrypts thousands of values a second."""

    __slots__ = ("_aead",)

    def __init__(self, data_key: bytes) -> None:
        _require_key(data_key, "data key")
        self._aead = AESGCM(data_key)

    def __repr__(self) -> str:
        return "Cipher(<key hidden>)"

    def encrypt(self, plaintext: str, aad: bytes = b"") -> str:
        """An ASCII token: 'v1.' + url-safe base64 (no padding) of nonce || ciphertext || tag.
        The empty string stays empty: there is nothing personal to hide in it."""
        if not plaintext:
            return ""
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext.encode(), aad)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def decrypt(self, token: str, aad: bytes = b"") -> str:
        """The plaintext of `token`; `Undecryptable` if this key (and aad) did not make it."""
        if not token:
            return ""
        if not token.startswith(TOKEN_PREFIX):
            raise Undecryptable("not a Lethe token (unknown format)")
        body = token[_PREFIX_LEN:]
        try:
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise Undecryptable("token is not valid base64") from None
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise Undecryptable("token is too short")
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise Undecryptable("token does not open with this key (wrong or destroyed key, or tampered)") from None
        return plain.decode("utf-8")


def _require_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"a {what} must be {KEY_BYTES} bytes")
