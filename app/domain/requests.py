"""The deletion-request lifecycle as a pure state machine.

No I/O here: the services load a request, ask this module what the next state is, and store
the answer. Every transition either returns the new status or raises `TransitionRefused`
with a sentence a partner can read (it becomes the 409 `detail`).

    pending --anonymised--> in_grace --purged--> completed
       |  (immediate: anonymised and purged in one run) ----^
       +--restore--> restored  <--restore-- in_grace (before grace_until)
    any open status --held--> on_hold --released--> the status the step needs
    any open status --step failed--> failed --retried--> (as if from the failed step)
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    IN_GRACE = "in_grace"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    RESTORED = "restored"
    FAILED = "failed"


class Mode(StrEnum):
    GRACE = "grace"
    IMMEDIATE = "immediate"


class Source(StrEnum):
    PARTNER_API = "partner_api"
    USER = "user"
    OFFBOARDING = "offboarding"
    RETENTION = "retention"


class Step(StrEnum):
    """The two destructive steps of an erasure, in order."""

    ANONYMISE = "anonymise"
    PURGE = "purge"


OPEN_STATUSES: frozenset[Status] = frozenset(
    {Status.PENDING, Status.IN_GRACE, Status.ON_HOLD, Status.FAILED}
)
FINAL_STATUSES: frozenset[Status] = frozenset({Status.COMPLETED, Status.RESTORED})


class TransitionRefused(Exception):
    """The requested transition is not allowed; the message says why."""


@dataclass(frozen=True, slots=True)
class RequestState:
    """What the state machine needs to know about a request."""

    status: Status
    mode: Mode
    grace_until: datetime
    next_step: Step  # the step this request waits for (meaningful while open)


MAX_USER_ID = 200  # characters: the width of what a user id may be


def user_id_problem(user_id: str) -> str | None:
    """Why a user id cannot be taken (a sentence naming the problem, never the value), if it cannot."""
    if not user_id:
        return "the user id is empty"
    if len(user_id) > MAX_USER_ID:
        return f"the user id is longer than {MAX_USER_ID} characters"
    if "\x00" in user_id:
        return "the user id contains a NUL character"
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        return "the user id is not valid Unicode (a lone surrogate)"
    return None


def add_months(moment: datetime, months: int) -> datetime:
    """Same day-of-month `months` later, clamped to the month's last day (GDPR Art. 12(3))."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def deadlines(requested_at: datetime, mode: Mode, grace_days: int,
              received_at: datetime | None = None) -> tuple[datetime, datetime]:
    """(grace_until, due_by) for a new request.

    `requested_at` is when the user asked: for a `delete_profile_confirmed` its event time
    (see `asked_at`), else the time Lethe received the request (`received_at`, by default the
    same). The restore window runs from `requested_at`, but never ends sooner than the policy's
    `grace_days` after `received_at`: a confirmation delivered late still gets its whole window.
    Immediate mode has no window. `due_by` is the GDPR Art. 12(3) one-month answer deadline,
    counted as CONTRACT §3 says from when Lethe received the request, and never earlier than the
    end of grace (one month from late January is shorter than 30 days).
    """
    received = received_at or requested_at
    grace = timedelta(days=grace_days)
    grace_until = received if mode is Mode.IMMEDIATE else max(requested_at + grace, received + grace)
    return grace_until, max(add_months(received, 1), grace_until)


def asked_at(event_at: datetime, received_at: datetime) -> datetime:
    """When a user's own lifecycle event happened: its event time, bounded by receipt (a clock
    ahead of ours cannot date a request in the future)."""
    return min(event_at, received_at)


def confirmation_stands(confirmed_at: datetime, last_restored_at: datetime | None) -> bool:
    """Of a user's `delete_profile_confirmed` and `account_restored`, the later by event time
    wins, whichever arrives first. At the same instant the restore wins (nothing is deleted)."""
    return last_restored_at is None or confirmed_at > last_restored_at


def latest(current: datetime | None, at: datetime) -> datetime:
    """The later of a recorded lifecycle instant (None: none yet) and a new one."""
    return at if current is None or at > current else current


def restore_applies(restored_at: datetime, requested_at: datetime) -> bool:
    """An `account_restored` restores the open request only if it is not older than it."""
    return restored_at >= requested_at


def step_due(state: RequestState, now: datetime) -> Step | None:
    """Which step a job may run for this request now, if any."""
    if state.status not in OPEN_STATUSES:
        return None
    if state.next_step is Step.ANONYMISE:
        return Step.ANONYMISE
    if state.mode is Mode.IMMEDIATE or now >= state.grace_until:
        return Step.PURGE
    return None


def after_anonymised(state: RequestState) -> RequestState:
    _require_step(state, Step.ANONYMISE)
    return RequestState(Status.IN_GRACE, state.mode, state.grace_until, Step.PURGE)


def after_purged(state: RequestState) -> RequestState:
    _require_step(state, Step.PURGE)
    return RequestState(Status.COMPLETED, state.mode, state.grace_until, Step.PURGE)


def after_offboarded(state: RequestState) -> RequestState:
    """The partnership ended and the offboarding job deleted the user's data with the rest of
    the project's: nothing is left to restore or purge, whatever step the request waited for."""
    _require_open(state)
    return RequestState(Status.COMPLETED, state.mode, state.grace_until, Step.PURGE)


def after_failure(state: RequestState) -> RequestState:
    """A step failed after its retries; the next job run tries the same step again."""
    _require_open(state)
    return RequestState(Status.FAILED, state.mode, state.grace_until, state.next_step)


def after_held(state: RequestState) -> RequestState:
    """A regulatory hold blocks the next step."""
    _require_open(state)
    return RequestState(Status.ON_HOLD, state.mode, state.grace_until, state.next_step)


def after_released(state: RequestState) -> RequestState:
    """The hold is gone: the request waits for its step again."""
    if state.status is not Status.ON_HOLD:
        raise TransitionRefused(f"the request is {state.status}, not on hold")
    waiting = Status.PENDING if state.next_step is Step.ANONYMISE else Status.IN_GRACE
    return RequestState(waiting, state.mode, state.grace_until, state.next_step)


def restore(state: RequestState, now: datetime) -> RequestState:
    """The user came back during grace: everything is linked again."""
    if state.status is Status.RESTORED:
        raise TransitionRefused("the request was already restored")
    if state.status is Status.COMPLETED:
        raise TransitionRefused("the user's data was already purged; nothing can be restored")
    if state.mode is Mode.IMMEDIATE:
        raise TransitionRefused("an immediate deletion has no grace period and cannot be restored")
    if state.next_step is Step.PURGE and now >= state.grace_until:
        raise TransitionRefused("the grace period has ended; the purge can no longer be stopped")
    return RequestState(Status.RESTORED, state.mode, state.grace_until, state.next_step)


def _require_open(state: RequestState) -> None:
    if state.status not in OPEN_STATUSES:
        raise TransitionRefused(f"the request is already {state.status}")


def _require_step(state: RequestState, step: Step) -> None:
    _require_open(state)
    if state.next_step is not step:
        raise TransitionRefused(f"the request waits for {state.next_step}, not {step}")


MAX_EXTENSION_MONTHS = 2  # Art. 12(3): the one-month deadline "may be extended by two further months"


def overdue(status: Status, due_by: datetime, now: datetime) -> bool:
    """Past its Art. 12(3) deadline while still open."""
    return status in OPEN_STATUSES and now > due_by


def extended_due_by(due_by: datetime, extended_months: int, months: int) -> tuple[datetime, int]:
    """The deadline extended by `months` more: (new due_by, total months extended). The total
    stays within MAX_EXTENSION_MONTHS beyond the first month from receipt (Art. 12(3): "by two
    further months"), counted from the deadline as it stands."""
    if months < 1 or extended_months + months > MAX_EXTENSION_MONTHS:
        left = MAX_EXTENSION_MONTHS - extended_months
        raise TransitionRefused(f"the deadline may be extended by {MAX_EXTENSION_MONTHS} months in all; "
                                f"{left} left for this request")
    return add_months(due_by, months), extended_months + months
