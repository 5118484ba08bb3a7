"""The partners' back-office metrics: the anonymous daily aggregates (DAU/WAU/MAU, messages,
reactions, events) that outlive the 13-month cap. Computed by the retention job at 00:00 UTC
for every finished day."""

from __future__ import annotations

from datetime import date, timedelta

import msgspec

from app.ports import Clock, EventLifecycle
from app.services.errors import InvalidInput
from app.services.views import DailyMetricsOut, DailyMetricsPage

DEFAULT_DAYS = 90
MAX_DAYS = 800  # a little over two years per call
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2149, 6, 6)  # ClickHouse's Date range


class MetricsService:
    def __init__(self, lifecycle: EventLifecycle, clock: Clock) -> None:
        self._lifecycle = lifecycle
        self._clock = clock

    def daily(self, project: str, since: date | None, until: date | None) -> DailyMetricsPage:
        """Days from `since` to `until`, both included; by default the last 90 finished days."""
        for name, day in (("since", since), ("until", until)):
            if day is not None and not FIRST_DAY <= day <= LAST_DAY:
                raise InvalidInput(f"{name}: must be between {FIRST_DAY} and {LAST_DAY}")
        until = until or self._clock().date() - timedelta(days=1)
        since = since or max(FIRST_DAY, until - timedelta(days=DEFAULT_DAYS - 1))
        if since > until:
            raise InvalidInput("since: must not be after until")
        if (until - since).days >= MAX_DAYS:
            raise InvalidInput(f"since/until: at most {MAX_DAYS} days per call")
        rows = self._lifecycle.metrics(project, since, until + timedelta(days=1))
        return DailyMetricsPage([msgspec.convert({**row, "day": row["day"].isoformat()}, DailyMetricsOut)
                                 for row in rows])
