from datetime import UTC, datetime, timedelta

import pytest

from app.domain.holds import Data, Hold, Scope, covering, covers, keeper, stops

T0 = datetime(2026, 5, 1, tzinfo=UTC)
DATA = Data("acme", frozenset({"u-1"}), frozenset({"room-9"}), frozenset({"m-3"}))


@pytest.mark.parametrize(("scope", "target", "expected"), [
    (Scope.USER, "u-1", True), (Scope.USER, "u-2", False),
    (Scope.ROOM, "room-9", True), (Scope.ROOM, "room-1", False),
    (Scope.MESSAGE, "m-3", True), (Scope.MESSAGE, "m-4", False),
    (Scope.PROJECT, "acme", True),
])
def test_scope_decides_what_a_hold_covers(scope: Scope, target: str, expected: bool) -> None:
    assert covers(Hold("h", "acme", scope, target, T0), DATA) is expected


def test_a_hold_never_covers_another_projects_data() -> None:
    assert not covers(Hold("h", "other", Scope.PROJECT, "other", T0), DATA)
    assert not covers(Hold("h", "other", Scope.USER, "u-1", T0), DATA)


def test_a_hold_stands_until_released_or_expired_plus_the_delay() -> None:
    released = Hold("h", "acme", Scope.USER, "u-1", T0, released_at=T0 + timedelta(days=2))
    assert released.stands(T0 + timedelta(days=1))
    assert not released.stands(T0 + timedelta(days=2))
    assert released.stands(T0 + timedelta(days=2, hours=23), release_delay=timedelta(days=1))
    assert not released.stands(T0 + timedelta(days=3), release_delay=timedelta(days=1))
    expiring = Hold("h", "acme", Scope.USER, "u-1", T0, expires_at=T0 + timedelta(hours=1))
    assert expiring.stands(T0) and not expiring.stands(T0 + timedelta(hours=1))
    # from its commit, whatever the job's clock says: a lagging worker still sees it
    assert Hold("h", "acme", Scope.USER, "u-1", T0).stands(T0 - timedelta(seconds=1))


def test_covering_lists_only_standing_holds_that_cover() -> None:
    holds = [Hold("a", "acme", Scope.USER, "u-1", T0), Hold("b", "acme", Scope.USER, "u-2", T0),
             Hold("c", "acme", Scope.ROOM, "room-9", T0, released_at=T0 + timedelta(hours=1))]
    assert [h.id for h in covering(holds, DATA, T0 + timedelta(minutes=1))] == ["a", "c"]
    assert [h.id for h in covering(holds, DATA, T0 + timedelta(hours=2))] == ["a"]


@pytest.mark.parametrize(("scope", "sealed", "expected"), [
    (Scope.USER, True, True), (Scope.PROJECT, True, True),  # they cover the whole user
    (Scope.ROOM, False, True), (Scope.MESSAGE, False, True),  # nothing under their key yet: stop, to be safe
    (Scope.ROOM, True, False), (Scope.MESSAGE, True, False),  # they keep exactly their part
])
def test_which_holds_stop_a_users_erasure_and_which_keep_their_part(scope: Scope, sealed: bool,
                                                                   expected: bool) -> None:
    assert stops(Hold("h", "acme", scope, "x", T0, sealed=sealed)) is expected


def test_the_keeper_of_new_data_is_the_first_standing_room_or_message_hold_covering_it() -> None:
    user = Hold("u", "acme", Scope.USER, "u-1", T0)  # covers the user, but keeps no data under a key
    ended = Hold("r0", "acme", Scope.ROOM, "room-9", T0, released_at=T0 + timedelta(minutes=1))
    room = Hold("r", "acme", Scope.ROOM, "room-9", T0 + timedelta(minutes=2))
    message = Hold("m", "acme", Scope.MESSAGE, "m-3", T0 + timedelta(minutes=3))
    later = T0 + timedelta(hours=1)
    assert keeper([user, ended, room, message], DATA, later) == room
    assert keeper([user, ended, message], DATA, later) == message
    assert keeper([user, ended], DATA, later) is None
    assert keeper([ended], DATA, T0, release_delay=timedelta(hours=1)) == ended  # the delay counts
    assert keeper([room], Data("acme", rooms=frozenset({"room-1"})), later) is None
