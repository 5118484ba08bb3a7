from datetime import UTC, datetime, timedelta

import pytest

from app.domain import requests as rq
from app.domain.requests import Mode, RequestState, Status, Step, TransitionRefused

T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
GRACE_END = T0 + timedelta(days=30)


def state(status: Status, mode: Mode = Mode.GRACE, step: Step = Step.ANONYMISE) -> RequestState:
    return RequestState(status, mode, T0 if mode is Mode.IMMEDIATE else GRACE_END, step)


def test_deadlines_grace_is_policy_days_and_due_by_is_one_calendar_month() -> None:
    grace_until, due_by = rq.deadlines(T0, Mode.GRACE, 30)
    assert grace_until == T0 + timedelta(days=30)
    # one month after 31 January is the last day of February, but never before grace ends
    assert due_by == max(datetime(2026, 2, 28, 10, 0, tzinfo=UTC), grace_until)


def test_deadlines_immediate_has_no_grace() -> None:
    grace_until, due_by = rq.deadlines(T0, Mode.IMMEDIATE, 30)
    assert grace_until == T0
    assert due_by == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("start", "months", "expected"), [
    (datetime(2026, 1, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
    (datetime(2028, 1, 31, tzinfo=UTC), 1, datetime(2028, 2, 29, tzinfo=UTC)),
    (datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 15, tzinfo=UTC)),
    (datetime(2026, 3, 31, tzinfo=UTC), 13, datetime(2027, 4, 30, tzinfo=UTC)),
])
def test_add_months_clamps_to_month_end(start: datetime, months: int, expected: datetime) -> None:
    assert rq.add_months(start, months) == expected


def test_grace_request_goes_pending_in_grace_completed() -> None:
    s = rq.after_anonymised(state(Status.PENDING))
    assert (s.status, s.next_step) == (Status.IN_GRACE, Step.PURGE)
    assert rq.step_due(s, GRACE_END - timedelta(seconds=1)) is None
    assert rq.step_due(s, GRACE_END) is Step.PURGE
    done = rq.after_purged(s)
    assert done.status is Status.COMPLETED
    assert rq.step_due(done, GRACE_END) is None


def test_immediate_request_is_due_for_purge_at_once() -> None:
    s = rq.after_anonymised(state(Status.PENDING, Mode.IMMEDIATE))
    assert rq.step_due(s, T0) is Step.PURGE
    assert rq.after_purged(s).status is Status.COMPLETED


def test_pending_request_is_due_for_anonymise() -> None:
    assert rq.step_due(state(Status.PENDING), T0) is Step.ANONYMISE


def test_purge_before_anonymise_is_refused() -> None:
    with pytest.raises(TransitionRefused, match="waits for anonymise"):
        rq.after_purged(state(Status.PENDING))


def test_anonymise_twice_is_refused() -> None:
    with pytest.raises(TransitionRefused, match="waits for purge"):
        rq.after_anonymised(rq.after_anonymised(state(Status.PENDING)))


@pytest.mark.parametrize("final", [Status.COMPLETED, Status.RESTORED])
def test_final_states_accept_no_step(final: Status) -> None:
    for fn in (rq.after_anonymised, rq.after_purged, rq.after_failure, rq.after_held):
        with pytest.raises(TransitionRefused, match="already"):
            fn(state(final))


def test_restore_during_grace() -> None:
    s = rq.after_anonymised(state(Status.PENDING))
    assert rq.restore(s, GRACE_END - timedelta(seconds=1)).status is Status.RESTORED


def test_restore_of_pending_request_cancels_it() -> None:
    assert rq.restore(state(Status.PENDING), T0).status is Status.RESTORED


@pytest.mark.parametrize(("s", "reason"), [
    (state(Status.IN_GRACE, Mode.IMMEDIATE, Step.PURGE), "immediate"),
    (state(Status.COMPLETED, step=Step.PURGE), "already purged"),
    (state(Status.RESTORED), "already restored"),
    (state(Status.IN_GRACE, step=Step.PURGE), "grace period has ended"),
])
def test_restore_refusals_say_why(s: RequestState, reason: str) -> None:
    with pytest.raises(TransitionRefused, match=reason):
        rq.restore(s, GRACE_END)


def test_failure_keeps_the_step_to_retry() -> None:
    failed = rq.after_failure(rq.after_anonymised(state(Status.PENDING)))
    assert (failed.status, failed.next_step) == (Status.FAILED, Step.PURGE)
    assert rq.step_due(failed, GRACE_END) is Step.PURGE
    assert rq.after_purged(failed).status is Status.COMPLETED


def test_hold_and_release_return_to_the_waiting_status() -> None:
    held = rq.after_held(state(Status.PENDING))
    assert held.status is Status.ON_HOLD
    assert rq.after_released(held).status is Status.PENDING
    held_in_grace = rq.after_held(rq.after_anonymised(state(Status.PENDING)))
    assert rq.after_released(held_in_grace).status is Status.IN_GRACE


def test_release_of_a_request_not_on_hold_is_refused() -> None:
    with pytest.raises(TransitionRefused, match="not on hold"):
        rq.after_released(state(Status.PENDING))


def test_grace_from_a_confirmation_delivered_late_still_lasts_the_policy_from_receipt() -> None:
    asked, received = T0, T0 + timedelta(days=3)
    grace_until, due_by = rq.deadlines(asked, Mode.GRACE, 30, received)
    assert grace_until == received + timedelta(days=30)  # never shorter than 30 days from receipt
    assert due_by == max(rq.add_months(received, 1), grace_until)  # received + 1 month (CONTRACT §3)
    on_time_until, _ = rq.deadlines(received, Mode.GRACE, 30, received)
    assert on_time_until == grace_until
    # delivered two months late: the deadline is a month from receipt, not from the event
    late = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    _, due_by = rq.deadlines(datetime(2026, 10, 1, 10, 0, tzinfo=UTC), Mode.GRACE, 30, late)
    assert due_by == datetime(2027, 1, 7, 14, 0, tzinfo=UTC)


def test_a_request_is_dated_by_its_event_but_never_in_the_future() -> None:
    assert rq.asked_at(T0, T0 + timedelta(hours=1)) == T0
    assert rq.asked_at(T0 + timedelta(days=365), T0) == T0


def test_the_later_of_confirmation_and_restore_wins_and_a_tie_keeps_the_user() -> None:
    t1, t2 = T0, T0 + timedelta(minutes=1)
    assert rq.confirmation_stands(t2, None)
    assert rq.confirmation_stands(t2, t1)  # confirmed after restoring: the deletion stands
    assert not rq.confirmation_stands(t1, t2)  # restored after confirming (arrived first)
    assert not rq.confirmation_stands(t1, t1)
    assert rq.restore_applies(t2, t1) and rq.restore_applies(t1, t1)
    assert not rq.restore_applies(t1, t2)  # a restore older than the request does not undo it


def test_an_extension_adds_its_months_to_the_deadline_as_it_stands() -> None:
    due = datetime(2027, 1, 7, 14, 0, tzinfo=UTC)  # a late confirmation: a month from receipt
    assert rq.extended_due_by(due, 0, 2) == (datetime(2027, 3, 7, 14, 0, tzinfo=UTC), 2)
    once, total = rq.extended_due_by(due, 0, 1)
    assert rq.extended_due_by(once, total, 1) == (datetime(2027, 3, 7, 14, 0, tzinfo=UTC), 2)
    with pytest.raises(TransitionRefused, match="2 months in all; 0 left"):
        rq.extended_due_by(due, 2, 1)


@pytest.mark.parametrize("status", [Status.PENDING, Status.IN_GRACE, Status.FAILED])
def test_offboarding_completes_an_open_request_and_refuses_a_closed_one(status: Status) -> None:
    assert rq.after_offboarded(state(status)).status is Status.COMPLETED
    with pytest.raises(TransitionRefused):
        rq.after_offboarded(state(Status.RESTORED))
