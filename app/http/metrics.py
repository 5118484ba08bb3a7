"""Partners' back-office metrics (CONTRACT §3 "Back-office metrics")."""

from __future__ import annotations

from datetime import date
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery

from app.http.auth import BEARER_SECURITY, partner_only
from app.http.deps import MetricsDep
from app.services.accounts import Principal
from app.services.views import DailyMetricsPage


class MetricsController(Controller):
    security = BEARER_SECURITY
    path = "/v1/metrics"
    guards = [partner_only]
    tags = ["metrics"]

    @get("/daily", sync_to_thread=True)
    def daily(self, request: Request[Principal, Any, Any], metrics_service: MetricsDep,
              since: FromQuery[date | None] = None, until: FromQuery[date | None] = None) -> DailyMetricsPage:
        """DAU/WAU/MAU, messages, reactions and events per day, `since` to `until` included
        (default: the last 90 finished days). Anonymous aggregates: they outlive the 13-month
        cap; refreshed at 00:00 UTC."""
        principal = request.user
        page = metrics_service.daily(principal.projects[principal.project_id], since, until)
        return page
