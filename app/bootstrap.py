"""Composition root: Settings -> stores -> services. The only place that wires things together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import structlog
from clickhouse_connect.driver import exceptions as ch_errors
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.audit import CHAIN_LABEL, CHECKPOINT_LABEL, parse_checkpoint
from app.domain.crypto import derive_key
from app.domain.policy import Handles, PolicyError, datamap_problems
from app.ports import EmbeddedStoreBusy, JobKicker, SqlErasureStep
from app.services.accounts import AccountService
from app.services.audit import AuditService
from app.services.batches import BatchService
from app.services.callbacks import CallbackService
from app.services.console_sessions import ConsoleSessionService
from app.services.dead_letters import DeadLetterService
from app.services.deletion import DeletionService
from app.services.erasure import ErasureService
from app.services.health import HealthService
from app.services.held import HeldDataService
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.ingest import IngestService
from app.services.key_compaction import KeyCompaction
from app.services.keys import KeyService
from app.services.messages import MessageFeedService, MessageService
from app.services.metrics import MetricsService
from app.services.offboarding import OffboardingService
from app.services.officer_requests import OfficerRequests
from app.services.outbox import OutboxService
from app.services.policies import PolicyBook
from app.services.retention import RetentionService
from app.services.subjects import SubjectService
from app.services.suppressions import SuppressionService
from app.services.upgrades import Upgrade, Upgrades
from app.services.webhooks import WebhookAuthService
from app.stores.checkpoints import CheckpointFile, read_checkpoints
from app.stores.clickhouse.client import ClickHouse
from app.stores.clickhouse.events import ClickHouseEventStore
from app.stores.clickhouse.lifecycle import ClickHouseEventLifecycle
from app.stores.clickhouse.schema import migrate as migrate_clickhouse
from app.stores.sql import migrations
from app.stores.sql.audit_log import AuditLog
from app.stores.sql.engine import make_engine, ping
from app.stores.sql.erasure_steps import sql_steps
from app.stores.sql.keys import KeyTableCompaction
from app.stores.sql.subjects import Subjects
from app.stores.sql.uow import SqlUnitOfWork

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _no_kick(job: str) -> None:
    """Without a scheduler in this process the periodic runs (elsewhere) pick the work up."""


class Container:
    """Holds the stores and builds each service once. A plain class (not a dataclass) so that
    Litestar passes it to handlers as an opaque dependency instead of validating its fields."""

    def __init__(self, settings: Settings, engine: Engine, policies: PolicyBook, *,
                 clock: Callable[[], datetime] = utcnow, clickhouse: ClickHouse | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.policies = policies
        self.clock = clock  # tests replace it to move time
        self.kick: JobKicker = _no_kick  # `lethe serve` points it at its scheduler
        self._clickhouse = clickhouse
        self._ch_lock = threading.Lock()
        self._clickhouse_schema_pending = False  # the server was down at start-up: migrate on connect
        # An API process beside `lethe worker` (LETHE_SCHEDULER=off) on the embedded engine: the
        # worker owns ClickHouse, so this process never opens it (`lethe serve` sets this).
        self.clickhouse_in_worker = False

    def now(self) -> datetime:
        return self.clock()

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.session_factory, self.now, self.audit_keys[0])

    @cached_property
    def audit_keys(self) -> tuple[bytes, bytes]:
        """(chain key, checkpoint key), both derived from LETHE_SECRET_KEY."""
        secret = self.settings.secret_key
        return derive_key(secret, CHAIN_LABEL), derive_key(secret, CHECKPOINT_LABEL)

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @property
    def clickhouse(self) -> ClickHouse:
        """Opened on first use: commands that only need SQL never touch the embedded engine.
        A server that cannot be reached raises here, and the next use tries again."""
        with self._ch_lock:
            if self._clickhouse is None:
                if self.clickhouse_in_worker:
                    raise EmbeddedStoreBusy(
                        "this API process runs beside `lethe worker`, which owns the embedded ClickHouse: the "
                        "events are drained there, but analytics reads need a ClickHouse server "
                        "(LETHE_CLICKHOUSE_URL=http://...) or a single `lethe serve`")
                client = ClickHouse(self.settings.clickhouse_url, cluster=self.settings.clickhouse_cluster)
                if self._clickhouse_schema_pending:
                    migrate_clickhouse(client)
                    self._clickhouse_schema_pending = False
                self._clickhouse = client
            return self._clickhouse

    @cached_property
    def console_sessions(self) -> ConsoleSessionService:
        return ConsoleSessionService(self.uow, self.now, self.accounts)

    @cached_property
    def accounts(self) -> AccountService:
        accounts = AccountService(self.uow, self.now, self.settings.secret_key)
        accounts.on_forget(lambda: self.webhooks.forget())  # an offboarding closes every way in at once
        return accounts

    @cached_property
    def webhooks(self) -> WebhookAuthService:
        return WebhookAuthService(self.uow, self.now, self.settings.secret_key)

    @cached_property
    def deletions(self) -> DeletionService:
        return DeletionService(self.uow, self.now, self.policies, self.settings.secret_key,
                               lambda: self.kick("anonymise"), self.keys, self.identities, self.suppressions,
                               callbacks=self.callbacks)

    @cached_property
    def callbacks(self) -> CallbackService:
        return CallbackService(self.uow, self.now, self.keys, self.settings.secret_key,
                               private_networks=self.settings.callback_private_networks)

    @cached_property
    def batches(self) -> BatchService:
        return BatchService(self.uow, self.now, self.deletions, self.settings.secret_key)

    @cached_property
    def sql_steps(self) -> list[SqlErasureStep]:
        """Every SQL table's part of an erasure, in order (the erasure jobs' and tests')."""
        return sql_steps(self.keys, self.dead_letters, self.suppressions)

    @cached_property
    def officer_requests(self) -> OfficerRequests:
        return OfficerRequests(self.uow, self.identities, self.settings.secret_key)

    @cached_property
    def suppressions(self) -> SuppressionService:
        return SuppressionService(self.uow, self.policies, self.settings.secret_key)

    @cached_property
    def erasure(self) -> ErasureService:
        return ErasureService(self.uow, self.now, self.settings.secret_key, self.identities, self.sql_steps,
                              [self.events], after_run=self.keys.compaction.after_run,
                              holds=self.holds, before_run=self._settle_holds, callbacks=self.callbacks,
                              keep_in=self.held.take_in)

    def _settle_holds(self) -> None:
        """Before each erasure run: the outbox is drained (what a hold covers, and what an erasure
        counts, must be in ClickHouse), ended holds give their data back, standing ones take theirs."""
        self.outbox.drain()
        self.held.give_back()
        self.held.take()

    @cached_property
    def metrics(self) -> MetricsService:
        return MetricsService(self.event_lifecycle, self.now)

    @cached_property
    def event_lifecycle(self) -> ClickHouseEventLifecycle:
        return ClickHouseEventLifecycle(self.clickhouse)

    @cached_property
    def message_feed(self) -> MessageFeedService:
        return MessageFeedService(self.uow, self.policies, self.holds, self.identities)

    @cached_property
    def retention(self) -> RetentionService:
        return RetentionService(self.uow, self.now, self.policies, self.holds, self.event_lifecycle, self.deletions,
                                self.keys, self.dead_letters, self.identities)

    @cached_property
    def offboarding(self) -> OffboardingService:
        return OffboardingService(self.uow, self.holds, self.event_lifecycle, self.keys, self.dead_letters,
                                  self.identities)

    @cached_property
    def dead_letters(self) -> DeadLetterService:
        return DeadLetterService(self.uow, self.keys, self.holds)

    @cached_property
    def holds(self) -> HoldService:
        return HoldService(self.uow, self.now, self.policies, self.identities, self.settings.secret_key,
                           on_change=self._holds_changed)

    def _holds_changed(self) -> None:
        """A hold placed or released: the erasure jobs settle what it covers, and requests it
        stopped resume at once, not at the next periodic run (purge's is every 15 minutes)."""
        self.kick("anonymise")
        self.kick("purge")

    @cached_property
    def held(self) -> HeldDataService:
        return HeldDataService(self.uow, self.now, self.keys, self.holds, self.events, self.subjects,
                               self.identities)

    @cached_property
    def events(self) -> ClickHouseEventStore:
        return ClickHouseEventStore(self.clickhouse)

    @cached_property
    def messages(self) -> MessageService:
        return MessageService(self.uow)

    @cached_property
    def subjects(self) -> SubjectService:
        return SubjectService(self.uow, self.events, self.keys, self.settings.secret_key, self.dead_letters,
                              self.identities)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.uow, self.now, self.policies, self.outbox, self.deletions, self.keys,
                             self.dead_letters, self.settings.secret_key, self.suppressions, self.identities,
                             self.holds, lambda: self.kick("outbox"))

    @cached_property
    def health(self) -> HealthService:
        return HealthService(lambda: ping(self.engine), lambda: self.clickhouse.ping(),
                             lambda: self.clickhouse_in_worker, self.outbox)

    @cached_property
    def outbox(self) -> OutboxService:
        """Webhook calls only write it (SQL); draining it opens ClickHouse (the worker's job)."""
        return OutboxService(self.uow, self.now, lambda: self.events, self.settings.outbox_max_events)

    @cached_property
    def identities(self) -> Identities:
        return Identities(self.keys, self.settings.secret_key)

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self.uow, self.now, self.settings.secret_key,
                          KeyCompaction(KeyTableCompaction(self.engine)))

    @cached_property
    def audit(self) -> AuditService:
        return AuditService(self.uow, self.settings.secret_key, self.audit_keys,
                            CheckpointFile(self.settings.audit_checkpoints))

    def migrate(self, *, clickhouse: bool = True, outage_tolerated: bool = False) -> None:
        """Both stores' schemas. `outage_tolerated` (serve, worker): a ClickHouse server that
        does not answer is reported and migrated once it does; SQL and the API start anyway."""
        migrations.upgrade(self.engine)
        Upgrades(self.uow, self.now, [  # data steps that need LETHE_SECRET_KEY, so not in Alembic; each runs once
            Upgrade("seal_user_ids", lambda: self.identities.seal_legacy(self.uow)),
            Upgrade("request_audit_subjects", self.deletions.keep_audit_subjects),
            Upgrade("admin_namespace", lambda: self.identities.rekey_admins(self.uow)),
        ]).run()
        if not clickhouse:
            return
        try:
            migrate_clickhouse(self.clickhouse)
        except ch_errors.OperationalError as exc:
            if not outage_tolerated:
                raise
            self._clickhouse_schema_pending = True
            log.warning("clickhouse.unavailable_at_start", error=type(exc).__name__,
                        detail="events get 503 and /readyz says so until it answers")

    def close(self) -> None:
        if self._clickhouse is not None:
            self._clickhouse.close()
        self.engine.dispose()


def build(settings: Settings) -> Container:
    """The container for a process; refuses (PolicyError) a data map the code does not match."""
    container = Container(settings=settings, engine=make_engine(settings.database_url),
                          policies=PolicyBook.load(settings.policy_dir))
    if problems := datamap_problems(container.policies.datamap, personal_data_handlers(container.sql_steps)):
        container.close()
        raise PolicyError(f"{settings.policy_dir}: the data map and Lethe disagree: {'; '.join(problems)}")
    return container


def personal_data_handlers(steps: Sequence[SqlErasureStep]) -> dict[str, Handles]:
    """Every part of Lethe that erases, keeps or expires personal data, with what it declares
    it does (`handles`): the erasure's SQL steps, and the stores and services that keep or
    expire the rest. `build` and the suite hold the data map to it."""
    found = {f"{type(step).__name__}:{step.name}": step.handles for step in steps}
    found.update({cls.__name__: cls.handles for cls in (
        ClickHouseEventStore, Subjects, AuditLog, AccountService, DeletionService, OfficerRequests, HoldService,
        HeldDataService, RetentionService, CallbackService, OutboxService)})
    return found


def read_checkpoint_file(path: Path) -> list[Any]:
    """Checkpoints an operator kept in a file of their own (`lethe audit verify --checkpoint`).
    Raises OSError when it cannot be read, ValueError naming a line that is not a checkpoint:
    a file of the wrong shape is the operator's mistake, not a sign the chain was tampered with."""
    items = read_checkpoints(path)
    if not items:
        raise ValueError(f"{path} holds no checkpoint")
    for number, item in enumerate(items, start=1):
        try:
            parse_checkpoint(item)
        except ValueError as exc:
            raise ValueError(f"{path}: checkpoint {number}: {exc}") from None
    return items
