"""The key hierarchy's primitives: what erasure by key destruction relies on."""

import base64

import pytest

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

KEY = new_data_key()
TEXT = "Zoë Müller <zoe@example.org> 🙂"


def test_round_trip_including_unicode() -> None:
    cipher = Cipher(KEY)
    assert cipher.decrypt(cipher.encrypt(TEXT)) == TEXT
    assert Cipher(KEY).decrypt(cipher.encrypt(TEXT, b"row-1"), b"row-1") == TEXT  # a new Cipher, same key


def test_token_is_ascii_with_a_version_prefix_and_hides_the_value() -> None:
    token = Cipher(KEY).encrypt(TEXT)
    assert token.isascii() and token.startswith(TOKEN_PREFIX)
    assert "=" not in token and "+" not in token and "/" not in token  # url-safe, no padding
    assert "example" not in token and "M\u00fcller" not in token  # (a short fragment could occur by chance)


def test_two_encryptions_of_one_value_differ() -> None:
    cipher = Cipher(KEY)
    tokens = {cipher.encrypt("same") for _ in range(50)}
    assert len(tokens) == 50


def test_empty_string_stays_empty() -> None:
    cipher = Cipher(KEY)
    assert cipher.encrypt("") == ""
    assert cipher.decrypt("") == ""


def test_wrong_key_is_undecryptable() -> None:
    token = Cipher(KEY).encrypt(TEXT)
    with pytest.raises(Undecryptable):
        Cipher(new_data_key()).decrypt(token)


def test_aad_binds_a_token_to_its_row() -> None:
    cipher = Cipher(KEY)
    token = cipher.encrypt(TEXT, b"row-1")
    with pytest.raises(Undecryptable):
        cipher.decrypt(token, b"row-2")
    with pytest.raises(Undecryptable):
        cipher.decrypt(token)


def _flip(token: str, index: int) -> str:
    encoded = token[len(TOKEN_PREFIX):]
    body = bytearray(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    body[index] ^= 0x01
    return TOKEN_PREFIX + base64.urlsafe_b64encode(bytes(body)).rstrip(b"=").decode()


@pytest.mark.parametrize("index", [0, 11, 12, -17, -1])  # nonce, first ciphertext byte, tag
def test_any_flipped_bit_is_detected(index: int) -> None:
    cipher = Cipher(KEY)
    token = cipher.encrypt(TEXT)
    assert cipher.decrypt(_flip(_flip(token, index), index)) == TEXT  # the helper itself is faithful
    with pytest.raises(Undecryptable):
        cipher.decrypt(_flip(token, index))


@pytest.mark.parametrize("token", ["plain text", "v1.", "v1.!!!!", "v1.AAAA", "v9." + "A" * 40, "v1.ÄÖÜ",
                                   "v1." + "A" * 40])
def test_malformed_tokens_are_undecryptable(token: str) -> None:
    with pytest.raises(Undecryptable):
        Cipher(KEY).decrypt(token)


def test_undecryptable_is_a_value_error() -> None:
    assert issubclass(Undecryptable, ValueError)


def test_hkdf_versions_and_secrets_give_unrelated_keks() -> None:
    k1, k2 = derive_kek(b"secret", 1), derive_kek(b"secret", 2)
    assert len(k1) == len(k2) == 32
    assert k1 != k2
    assert derive_kek(b"secret", 1) == k1  # deterministic: derived, never stored
    assert derive_kek(b"other", 1) != k1
    assert k1 != b"secret".ljust(32, b"\0")


def test_kek_check_detects_a_wrong_secret() -> None:
    check = kek_check(derive_kek(b"secret", 1))
    assert len(check) == 64 and int(check, 16) >= 0
    assert kek_matches(derive_kek(b"secret", 1), check)
    assert not kek_matches(derive_kek(b"wrong", 1), check)
    assert not kek_matches(derive_kek(b"secret", 2), check)
    assert not kek_matches(derive_kek(b"secret", 1), "not hex")


def test_wrap_round_trip_and_binding() -> None:
    kek = derive_kek(b"secret", 1)
    wrapped = wrap(kek, KEY, b"key-1")
    assert len(wrapped) == 12 + 32 + 16
    assert KEY not in wrapped
    assert unwrap(kek, wrapped, b"key-1") == KEY
    assert wrap(kek, KEY, b"key-1") != wrapped  # random nonce
    with pytest.raises(Undecryptable):
        unwrap(kek, wrapped, b"key-2")  # moved to another row
    with pytest.raises(Undecryptable):
        unwrap(derive_kek(b"secret", 2), wrapped, b"key-1")
    with pytest.raises(Undecryptable):
        unwrap(kek, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"key-1")
    with pytest.raises(Undecryptable):
        unwrap(kek, wrapped[:-1], b"key-1")


def test_keys_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Cipher(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        wrap(b"short", KEY, b"")
    with pytest.raises(ValueError, match="empty"):
        derive_kek(b"", 1)
    with pytest.raises(ValueError, match="start at 1"):
        derive_kek(b"secret", 0)


def test_no_key_bytes_in_any_error_message() -> None:
    kek = derive_kek(b"secret", 1)
    other = new_data_key()
    token = Cipher(KEY).encrypt(TEXT)
    errors: list[BaseException] = []
    for attempt in (lambda: Cipher(other).decrypt(token), lambda: unwrap(kek, wrap(kek, KEY, b"a"), b"b"),
                    lambda: Cipher(KEY[:31])):
        with pytest.raises(ValueError, match=r"\w") as caught:
            attempt()
        errors.append(caught.value)
    for error in errors:
        text = f"{error!s} {error!r} {error.__cause__!r} {error.__context__!r}"
        for key in (KEY, other, kek, KEY[:31]):
            for form in (key.hex(), repr(key), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
                assert form not in text
        assert error.__cause__ is None
    assert KEY.hex() not in repr(Cipher(KEY))
