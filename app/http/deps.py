"""What handlers get injected: the services they use, by name, and the clock. Never the
container itself (a handler could then reach the engine, a unit of work or ClickHouse)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.di import NamedDependency, Provide

from app.bootstrap import Container
from app.ports import Clock
from app.services.accounts import AccountService
from app.services.audit import AuditService
from app.services.batches import BatchService
from app.services.callbacks import CallbackService
from app.services.console_sessions import ConsoleSessionService
from app.services.dead_letters import DeadLetterService
from app.services.deletion import DeletionService
from app.services.health import HealthService
from app.services.held import HeldDataService
from app.services.holds import HoldService
from app.services.ingest import IngestService
from app.services.messages import MessageFeedService, MessageService
from app.services.metrics import MetricsService
from app.services.officer_requests import OfficerRequests
from app.services.subjects import SubjectService
from app.services.suppressions import SuppressionService
from app.services.webhooks import WebhookAuthService

# dependency name -> the Container attribute it is (handlers name the parameter so)
SERVICES = {
    "accounts": "accounts", "audit_service": "audit", "batches": "batches", "callback_service": "callbacks",
    "dead_letters": "dead_letters", "deletions": "deletions", "held": "held", "hold_service": "holds",
    "ingest": "ingest", "message_feed": "message_feed", "message_service": "messages",
    "metrics_service": "metrics", "officer_requests": "officer_requests", "subjects": "subjects",
    "suppressions": "suppressions", "webhooks": "webhooks", "health": "health",
    "console_sessions": "console_sessions", "clock": "now",
}


# the parameter types handlers declare (injected by parameter name)
AccountsDep = NamedDependency[AccountService]
AuditDep = NamedDependency[AuditService]
BatchesDep = NamedDependency[BatchService]
CallbacksDep = NamedDependency[CallbackService]
ClockDep = NamedDependency[Clock]
ConsoleSessionsDep = NamedDependency[ConsoleSessionService]
DeadLettersDep = NamedDependency[DeadLetterService]
DeletionsDep = NamedDependency[DeletionService]
HealthDep = NamedDependency[HealthService]
HeldDataDep = NamedDependency[HeldDataService]
HoldsDep = NamedDependency[HoldService]
IngestDep = NamedDependency[IngestService]
MessageFeedDep = NamedDependency[MessageFeedService]
MessagesDep = NamedDependency[MessageService]
MetricsDep = NamedDependency[MetricsService]
OfficerRequestsDep = NamedDependency[OfficerRequests]
SubjectsDep = NamedDependency[SubjectService]
SuppressionsDep = NamedDependency[SuppressionService]
WebhooksDep = NamedDependency[WebhookAuthService]


def dependencies(container: Container) -> dict[str, Provide]:
    def provider(attribute: str) -> Callable[[], Any]:
        return lambda: getattr(container, attribute)

    return {name: Provide(provider(attribute), use_cache=True, sync_to_thread=False)
            for name, attribute in SERVICES.items()}
