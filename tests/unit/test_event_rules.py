"""Pure rules about events: effects resolve by event time, and which raw bodies name a user."""

from datetime import UTC, datetime, timedelta

from app.domain.events import Actor, is_admin_key, platform_user_id, shown_user_id, supersedes

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = T1 + timedelta(seconds=1)


def test_a_field_takes_the_latest_value_by_event_time() -> None:
    assert supersedes(T1, "a", None, None)
    assert supersedes(T2, "b", T1, "a")
    assert not supersedes(T1, "a", T2, "b")


def test_at_the_same_instant_the_value_decides_so_both_orders_agree() -> None:
    assert supersedes(T1, "b", T1, "a")
    assert not supersedes(T1, "a", T1, "b")
    assert not supersedes(T1, "a", T1, "a")  # a repeat changes nothing


def test_a_dead_letter_names_a_user_in_any_json_escaping() -> None:
    from app.domain.events import mentions

    user = "ü/ser+1=="
    assert mentions('{"value": {"user_id": "\\u00fc\\/ser+1=="}}', user)  # escaped, as a platform may send
    assert mentions('{"value": {"user_ids": ["x", "ü/ser+1=="]}}', user)
    assert mentions('not json at all ü/ser+1== here', user)
    assert mentions('{"value": {"user_id": 12345}}', "12345")
    assert not mentions('{"value": {"user_id": "someone else"}}', user)
    assert not mentions("anything", "")
    assert mentions('{"truncated": "\\u00fc\\/ser+1==', user)  # does not parse: escapes decoded anyway
    assert mentions("/v1/hooks?user=%C3%BC%2Fser%2B1%3D%3D", user)  # percent-encoded


def test_a_dead_letter_names_a_user_only_as_a_whole_token() -> None:
    from app.domain.events import mentions

    assert not mentions('{"value": {"user_id": "user_12"}}', "user_1")
    assert not mentions("garbage user_12 garbage", "user_1")
    assert mentions('{"value": {"source_url": "https://chat/u/user_1/profile"}}', "user_1")


def test_admins_have_their_own_namespace_of_user_keys() -> None:
    admin, user = Actor("admin", "42"), Actor("user", "42")
    assert admin.key != user.key  # the same platform id, two different people
    assert is_admin_key(admin.key) and not is_admin_key(user.key)
    assert platform_user_id(admin.key) == platform_user_id(user.key) == "42"
    assert platform_user_id("admin-not-a-prefix") == "admin-not-a-prefix"
    assert (shown_user_id(admin.key), shown_user_id(user.key)) == ("admin:42", "42")


def test_no_chat_user_id_can_name_an_admin() -> None:
    """A chat user may call themselves "admin:42" (ids may hold any character): they are still
    a chat user, never admin 42, and never any admin."""
    for chat_id in ("admin:42", "\\x00admin:42", "admin%3A42", " admin:42"):
        assert not is_admin_key(Actor("user", chat_id).key)
        assert Actor("user", chat_id).key != Actor("admin", "42").key


def test_the_dedup_key_is_keyed_so_a_guess_cannot_be_checked_against_it() -> None:
    """A plain hash of an envelope, kept 13 months, would confirm guesses of what it holds: a
    login's IP among 2^32, an erased user's id. Keyed, only the service can compute it."""
    import hashlib
    import json

    from app.domain.events import PropertyMap, parse_envelope

    envelope = {"event": "user_login", "value": {"project": "p", "external_user_id": "u-1", "ip": "198.51.100.77"}}
    key = parse_envelope(envelope, "p", T1, PropertyMap(), b"a" * 32).dedup_key
    assert key == parse_envelope(envelope, "p", T2, PropertyMap(), b"a" * 32).dedup_key  # a repeat: one key
    assert key != parse_envelope(envelope, "p", T1, PropertyMap(), b"b" * 32).dedup_key
    canonical = json.dumps({"event": "user_login", "value": envelope["value"], "key": None}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    assert key != hashlib.sha256(canonical.encode()).hexdigest()[:32]
    assert len(key) == 32 and int(key, 16) >= 0
