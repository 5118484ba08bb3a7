"""Effects resolve by event time, not delivery order (pure rules)."""

from datetime import UTC, datetime, timedelta

from app.domain.events import supersedes

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
