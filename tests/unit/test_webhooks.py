"""The pure webhook-auth rules: Standard Webhooks signatures, the timestamp window, rotation,
secret sealing, accepted methods."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import webhooks as hooks
from app.domain.crypto import Undecryptable

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
MASTER = b"test-secret-key"


def headers(msg_id: str, timestamp: int, *signatures: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": " ".join(signatures)}


def accepted(key: bytes, msg_id: str, timestamp: int, body: bytes, signature: str,
             keys: list[hooks.SigningKey] | None = None, now: datetime = NOW) -> bool:
    signed = hooks.parse_headers(headers(msg_id, timestamp, signature))
    try:
        hooks.verify(signed, body, keys if keys is not None else [hooks.SigningKey(key)], now)
    except hooks.WebhookAuthError:
        return False
    return True


def test_the_standard_webhooks_reference_vector_verifies() -> None:
    """The example of the Standard Webhooks specification and its libraries' tests."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = hooks.sign(hooks.signing_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = hooks.new_signing_secret()
    assert secret.startswith("whsec_") and len(hooks.signing_key(secret)) == 32
    assert secret != hooks.new_signing_secret()
    url = hooks.new_url_secret()
    assert len(base64.urlsafe_b64decode(url + "=")) == 32 and hooks.url_path(url) == f"/v1/hooks/{url}"


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    key = b"k" * 32
    expected = base64.b64encode(hmac.new(key, b"id-1.1700000000.{}", hashlib.sha256).digest()).decode()
    assert hooks.sign(key, "id-1", 1700000000, b"{}") == f"v1,{expected}"


def test_any_listed_v1_signature_may_match() -> None:
    key, body = b"k" * 32, b"[]"
    good = hooks.sign(key, "id", TS, body)
    other = hooks.sign(b"x" * 32, "id", TS, body)
    signed = hooks.parse_headers(headers("id", TS, "v1a,abc", other, good))
    hooks.verify(signed, body, [hooks.SigningKey(key)], NOW)


@pytest.mark.parametrize(("given_headers", "problem"), [
    ({}, "missing: webhook-id, webhook-timestamp, webhook-signature"),
    ({"webhook-id": "a", "webhook-timestamp": "1"}, "missing: webhook-signature"),
    ({"webhook-id": "a", "webhook-timestamp": "soon", "webhook-signature": "v1,AA=="}, "unix seconds"),
    ({"webhook-id": "a", "webhook-timestamp": "-5", "webhook-signature": "v1,AA=="}, "unix seconds"),
    ({"webhook-id": "a\x00", "webhook-timestamp": "1", "webhook-signature": "v1,AA=="}, "printable ASCII"),
    ({"webhook-id": "a" * 201, "webhook-timestamp": "1", "webhook-signature": "v1,AA=="}, "1-200"),
    ({"webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "v2,AA== v1,%%%"}, "no v1 signature"),
])
def test_malformed_headers_are_refused_with_a_reason(given_headers: dict[str, str], problem: str) -> None:
    with pytest.raises(hooks.WebhookAuthError, match=problem):
        hooks.parse_headers(given_headers)


@pytest.mark.parametrize("skew", [-301, 301, -86400, 10**9])
def test_a_timestamp_beyond_five_minutes_either_way_is_refused(skew: int) -> None:
    key, body = b"k" * 32, b"{}"
    assert not accepted(key, "id", TS + skew, body, hooks.sign(key, "id", TS + skew, body))
    assert "more than 5 minutes" in (hooks.timestamp_problem(TS + skew, NOW) or "")


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_a_timestamp_within_five_minutes_is_accepted(skew: int) -> None:
    key, body = b"k" * 32, b"{}"
    assert accepted(key, "id", TS + skew, body, hooks.sign(key, "id", TS + skew, body))


keys_ = st.binary(min_size=16, max_size=64)
ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
stamps = st.integers(min_value=TS - 300, max_value=TS + 300)
bodies = st.binary(max_size=300)


@settings(max_examples=200, deadline=None)
@given(key=keys_, msg_id=ids, ts=stamps, body=bodies, data=st.data())
def test_any_change_to_id_timestamp_body_or_secret_is_refused(key: bytes, msg_id: str, ts: int, body: bytes,
                                                              data: st.DataObject) -> None:
    signature = hooks.sign(key, msg_id, ts, body)
    assert accepted(key, msg_id, ts, body, signature)
    other_id = data.draw(ids.filter(lambda i: i != msg_id))
    other_ts = data.draw(stamps.filter(lambda t: t != ts))
    other_body = data.draw(bodies.filter(lambda b: b != body))
    other_key = data.draw(keys_.filter(lambda k: k != key))
    assert not accepted(key, other_id, ts, body, signature)
    assert not accepted(key, msg_id, other_ts, body, signature)
    assert not accepted(key, msg_id, ts, other_body, signature)
    assert not accepted(other_key, msg_id, ts, body, signature)


@settings(max_examples=100, deadline=None)
@given(body=bodies, old=keys_, new=keys_, hours=st.floats(min_value=0, max_value=48))
def test_across_a_rotation_both_secrets_verify_until_the_overlap_ends(body: bytes, old: bytes, new: bytes,
                                                                      hours: float) -> None:
    rotated = NOW
    until = rotated + hooks.ROTATION_OVERLAP
    now = rotated + timedelta(hours=hours)
    ts = int(now.timestamp())
    keys = hooks.keys_at(new, old, until, now)
    assert accepted(new, "id", ts, body, hooks.sign(new, "id", ts, body), keys, now)
    old_valid = accepted(old, "id", ts, body, hooks.sign(old, "id", ts, body), keys, now)
    assert old_valid == (hours < 24 or old == new)
    # keys loaded (and cached) before the overlap ended still refuse the old secret after it
    cached = hooks.keys_at(new, old, until, rotated)
    assert accepted(old, "id", ts, body, hooks.sign(old, "id", ts, body), cached, now) == (hours < 24 or old == new)


def test_sealed_secrets_open_only_with_their_key_and_project() -> None:
    secret = hooks.new_signing_secret()
    sealed = hooks.seal_secret(MASTER, "p-1", secret)
    assert secret not in sealed and hooks.signing_key(secret).hex() not in sealed
    assert hooks.open_secret(MASTER, "p-1", sealed) == secret
    with pytest.raises(Undecryptable):
        hooks.open_secret(MASTER, "p-2", sealed)
    with pytest.raises(Undecryptable):
        hooks.open_secret(b"another key", "p-1", sealed)


def test_a_delivery_receipt_fits_the_receipts_column_and_differs_from_event_keys() -> None:
    receipt = hooks.delivery_receipt("msg_" + "x" * 190)
    assert len(receipt) == 32 and receipt.startswith("wid:")
    assert hooks.delivery_receipt("a") != hooks.delivery_receipt("b")


@pytest.mark.parametrize(("body", "project"), [
    (b'{"event": "x", "value": {"project": "acme"}}', "acme"),
    (b'[{"value": {"project": "acme"}}, {"value": {"project": "acme"}}]', "acme"),
    (b'[{"value": {"project": "acme"}}, {"value": {"project": "beta"}}]', None),
    (b'{"value": {}}', None),
    (b'{"value": {"project": 5}}', None),
    (b"not json", None),
    (b"[1, 2]", None),
])
def test_the_project_a_signed_body_names(body: bytes, project: str | None) -> None:
    assert hooks.claimed_project(body) == project


def test_accepted_methods_parse_and_format() -> None:
    assert hooks.parse_methods("url, Signed") == {"url", "signed"}
    assert hooks.format_methods({"url", "signed"}) == "signed,url"
    with pytest.raises(ValueError, match="unknown webhook auth method basic"):
        hooks.parse_methods("signed,basic")
    with pytest.raises(ValueError, match="at least one"):
        hooks.parse_methods(" , ")
