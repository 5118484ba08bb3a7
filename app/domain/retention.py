"""What the retention job may remove, and when (pure).

Nothing personal outlives the policy's cap (13 months by default) unless a hold keeps it. Raw
events leave ClickHouse by whole daily partitions up to the earliest cap of any project;
projects with a shorter cap lose their older rows one by one. Dead letters and idempotency
records have shorter lives of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from app.domain.policy import Policy
from app.domain.requests import add_months

IDEMPOTENCY_KEYS_KEPT = timedelta(days=1)  # a partner retries within minutes; a day is ample


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """For one project at one instant: what was before each of these goes."""

    personal: datetime  # messages, complaints, logins, events, dedup records; users idle since
    dead_letters: datetime
    idempotency_keys: datetime


def cutoffs(policy: Policy, now: datetime) -> Cutoffs:
    return Cutoffs(personal=add_months(now, -policy.retention_months),
                   dead_letters=now - timedelta(days=policy.dead_letter_retention_days),
                   idempotency_keys=now - IDEMPOTENCY_KEYS_KEPT)


def partition_cutoff(project_cutoffs: Iterable[datetime], default: Policy, now: datetime) -> date:
    """The day before which whole event partitions go: the earliest cap of any project (a
    project without an override of its own follows the default)."""
    return min([*project_cutoffs, cutoffs(default, now).personal]).date()


def rows_before(cutoff: datetime, partitions_before: date) -> datetime | None:
    """Where a project's cap is shorter than the partition drop reaches, the instant before
    which its remaining events go row by row (midnight of its cutoff day); None otherwise."""
    if cutoff.date() <= partitions_before:
        return None
    return cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
