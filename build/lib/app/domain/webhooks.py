"""Webhook authentication rules (pure): Standard Webhooks signatures, the timestamp window,
secret URLs, which methods a project accepts, and how signing secrets are sealed at rest.

Standard Webhooks (https://www.standardwebhooks.com): the sender sends `webhook-id`,
`webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated list of
`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}." + body)>`, where `key` is the base64-decoded
part of the `whsec_...` secret after its prefix. A delivery is accepted when any listed v1
signature matches under any secret valid at that moment (a rotated secret stays valid for
ROTATION_OVERLAP), and its timestamp lies within TOLERANCE of now, either way.

No secret ever appears in an exception message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.domain.crypto import KEY_BYTES, Cipher

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks format tag, not a secret
SECRET_BYTES = 32
TOLERANCE = timedelta(minutes=5)
ROTATION_OVERLAP = timedelta(hours=24)
HOOKS_PATH = "/v1/hooks/"
MAX_ID_LENGTH = 200
SIGNED, BEARER, URL = "signed", "bearer", "url"
METHODS = (SIGNED, BEARER, URL)  # how a project's events may be authenticated; all by default
DEFAULT_METHODS = ",".join(METHODS)
_SEAL_INFO = b"lethe/webhook-signing-secret/v1"  # HKDF label: unrelated to every other derived key


class WebhookAuthError(ValueError):
    """Why a signed delivery is refused, said plainly; never names a secret."""


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """The three Standard Webhooks headers of one delivery, parsed."""

    id: str
    timestamp: int
    signatures: tuple[bytes, ...]  # the decoded v1 signatures; other versions are ignored


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing secret's key bytes and until when it is valid (None: the current secret)."""

    key: bytes = field(repr=False)
    valid_until: datetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.valid_until is None or now < self.valid_until


# --- secrets -------------------------------------------------------------------------------

def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the base64-decoded part after the prefix)."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookAuthError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise WebhookAuthError("a webhook secret is whsec_ followed by base64")
    return key


def new_url_secret() -> str:
    """The secret part of a project's webhook URL: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(SECRET_BYTES)


def url_path(url_secret: str) -> str:
    return HOOKS_PATH + url_secret


def hash_secret(secret: str) -> str:
    """Stored form of a random secret (256 bits): a plain SHA-256 is safe, as for tokens."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _sealing_cipher(master: bytes) -> Cipher:
    if not master:
        raise ValueError("the secret key is empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_SEAL_INFO)
    return Cipher(hkdf.derive(master))


def _seal_aad(project_id: str) -> bytes:
    return f"lethe/webhook-secret/{project_id}".encode()


def seal_secret(master: bytes, project_id: str, secret: str) -> str:
    """A signing secret as stored: AES-GCM under a key derived from LETHE_SECRET_KEY for this
    purpose only, bound to its project (a sealed secret copied to another project won't open)."""
    return _sealing_cipher(master).encrypt(secret, _seal_aad(project_id))


def open_secret(master: bytes, project_id: str, sealed: str) -> str:
    """The secret inside `sealed`; crypto.Undecryptable when this key or project did not seal it."""
    return _sealing_cipher(master).decrypt(sealed, _seal_aad(project_id))


def keys_at(current: bytes | None, previous: bytes | None, previous_until: datetime | None,
            now: datetime) -> list[SigningKey]:
    """The keys that verify at `now`: the current one, and the one it replaced until its overlap ends."""
    keys = [SigningKey(current)] if current else []
    if previous and previous_until is not None and now < previous_until:
        keys.append(SigningKey(previous, previous_until))
    return keys


# --- signing and verifying --------------------------------------------------------------

def _mac(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` entry for one delivery: `v1,<base64>`."""
    return "v1," + base64.b64encode(_mac(key, msg_id, timestamp, body)).decode("ascii")


def parse_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """The Standard Webhooks headers (`headers` must look names up case-insensitively)."""
    missing = [name for name in ("webhook-id", "webhook-timestamp", "webhook-signature") if not headers.get(name)]
    if missing:
        raise WebhookAuthError(f"a signed delivery needs the headers webhook-id, webhook-timestamp and "
                               f"webhook-signature; missing: {', '.join(missing)}")
    msg_id = headers["webhook-id"].strip()
    if not msg_id or len(msg_id) > MAX_ID_LENGTH or not msg_id.isascii() or not msg_id.isprintable():
        raise WebhookAuthError(f"webhook-id must be 1-{MAX_ID_LENGTH} printable ASCII characters")
    raw_ts = headers["webhook-timestamp"].strip()
    if not raw_ts.isascii() or not raw_ts.isdigit() or len(raw_ts) > 12:
        raise WebhookAuthError("webhook-timestamp must be unix seconds (an integer)")
    signatures = []
    for entry in headers["webhook-signature"].split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            signatures.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue  # an undecodable entry matches nothing
    if not signatures:
        raise WebhookAuthError("webhook-signature holds no v1 signature (expected v1,<base64 HMAC-SHA256>)")
    return SignedHeaders(msg_id, int(raw_ts), tuple(signatures))


def timestamp_problem(timestamp: int, now: datetime) -> str | None:
    """Why a delivery's timestamp is refused, or None when it is within TOLERANCE of now."""
    skew = timestamp - now.timestamp()
    if abs(skew) <= TOLERANCE.total_seconds():
        return None
    way = "in the future" if skew > 0 else "old"
    return (f"webhook-timestamp is more than {int(TOLERANCE.total_seconds() // 60)} minutes {way}: "
            "sign each delivery when it is sent, with a synchronised clock")


def signature_matches(signed: SignedHeaders, body: bytes, keys: Iterable[SigningKey], now: datetime) -> bool:
    """Whether any listed v1 signature matches under any key valid at `now` (constant time per compare)."""
    for key in keys:
        if not key.valid_at(now):
            continue
        expected = _mac(key.key, signed.id, signed.timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in signed.signatures):
            return True
    return False


def verify(signed: SignedHeaders, body: bytes, keys: Sequence[SigningKey], now: datetime) -> None:
    """Raise WebhookAuthError unless the delivery is fresh and signed under a valid key."""
    if problem := timestamp_problem(signed.timestamp, now):
        raise WebhookAuthError(problem)
    if not signature_matches(signed, body, keys, now):
        raise WebhookAuthError(NO_MATCH)


NO_MATCH = ("no webhook-signature matches this body under the project's signing secret "
            "(sign '{webhook-id}.{webhook-timestamp}.{body}' with HMAC-SHA256)")


def delivery_receipt(msg_id: str) -> str:
    """The receipt that marks a webhook-id as seen (32 characters, like an event's dedup key;
    the ':' keeps it apart from those, which are hex)."""
    return "wid:" + hashlib.sha256(msg_id.encode()).hexdigest()[:28]


def claimed_project(body: bytes) -> str | None:
    """The project a signed body names (`value.project` of its envelopes), to find the secret to
    verify it with; None when the body names none or several."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    envelopes = parsed if isinstance(parsed, list) else [parsed]
    names = {e["value"].get("project") for e in envelopes
             if isinstance(e, dict) and isinstance(e.get("value"), dict)}
    if len(names) != 1:
        return None
    (name,) = names
    return name if isinstance(name, str) and name else None


# --- which methods a project accepts -----------------------------------------------------

def parse_methods(text: str) -> frozenset[str]:
    """`signed,bearer,url` (any subset, at least one) as a set; ValueError naming what is wrong."""
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(METHODS))
    if unknown:
        raise ValueError(f"unknown webhook auth method {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    if not chosen:
        raise ValueError(f"allow at least one webhook auth method of {', '.join(METHODS)}")
    return frozenset(chosen)


def format_methods(methods: Iterable[str]) -> str:
    """The stored form, in a stable order."""
    chosen = set(methods)
    return ",".join(m for m in METHODS if m in chosen)
