"""The Litestar application factory."""

from __future__ import annotations

import sys
from pathlib import Path

import structlog
import swagger_ui_bundle  # type: ignore[import-untyped]
from litestar import Litestar
from litestar.di import Provide
from litestar.logging.config import StructLoggingConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from app.bootstrap import Container
from app.http.audit import AuditController
from app.http.auth import auth_middleware
from app.http.callbacks import CallbackController
from app.http.console import ConsoleController
from app.http.deletion_requests import DeletionRequestController
from app.http.errors import HANDLERS, QUIET_ERRORS
from app.http.events import EventsController, HooksController
from app.http.holds import HoldController
from app.http.inputs import RefuseUnstorableInput
from app.http.limits import rate_limits
from app.http.messages import MessagesController, SubjectsController
from app.http.metrics import MetricsController
from app.http.officer import OfficerController
from app.http.ops import healthz, readyz
from app.http.suppressions import SuppressionsController
from app.logging import processors
from app.observability import REQUEST_CENSUS

SCHEMA_ASSETS = "/schema-assets"  # the API docs' scripts and styles, served here (public, like /schema)
HTTP_DIR = Path(__file__).resolve().parent  # templates/ and static/ (the console's; no CDN)
MAX_BODY = 10 * 1024 * 1024  # 1,000 events of ~10 KB each


# Answers that are not faults: no traceback. (Every 429 was an error line with a traceback: the
# overload bench spent most of a refusal writing it.) A 500 still logs its traceback.
QUIET: set[int | type[Exception]] = {*range(400, 500), 503, *QUIET_ERRORS}


class Metrics(PrometheusController):
    """Prometheus text, not JSON: left out of the OpenAPI document."""

    include_in_schema = False


def create_app(container: Container) -> Litestar:
    REQUEST_CENSUS.watch(container.uow, container.now)  # /metrics counts requests by status
    prometheus = PrometheusConfig(app_name="lethe", prefix="lethe", group_path=True,
                                  exclude=["^/metrics", "^/healthz"])
    logging = StructlogPlugin(StructlogConfig(
        structlog_logging_config=StructLoggingConfig(
            processors=processors(), log_exceptions="always",
            disable_stack_trace=QUIET,
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        ),
        enable_middleware_logging=False,  # request logs would print paths and queries naming users
    ))
    return Litestar(
        route_handlers=[healthz, readyz, Metrics, DeletionRequestController, CallbackController, AuditController,
                        EventsController, HooksController, MessagesController, SubjectsController, HoldController,
                        OfficerController, MetricsController, SuppressionsController, ConsoleController,
                        create_static_files_router(path="/console-static", directories=[HTTP_DIR / "static"],
                                                   include_in_schema=False),
                        create_static_files_router(path=SCHEMA_ASSETS, directories=[swagger_ui_bundle.swagger_ui_path],
                                                   include_in_schema=False)],
        template_config=TemplateConfig(directory=HTTP_DIR / "templates", engine=JinjaTemplateEngine),
        dependencies={"container": Provide(lambda: container, use_cache=True, sync_to_thread=False)},
        middleware=[prometheus.middleware, RefuseUnstorableInput,
                    auth_middleware(container.accounts, container.webhooks), *rate_limits(container.policies.limits)],
        exception_handlers=HANDLERS,
        plugins=[logging],
        openapi_config=OpenAPIConfig(
            title="Lethe", version="0.1.0", description="GDPR data-lifecycle and deletion service",
            components=Components(security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer",
                description="a partner api_key, a webhook_token or an officer token, as each route says")}),
            # Swagger UI from Lethe itself (the swagger-ui-bundle package), not from a CDN: it works offline
            render_plugins=[SwaggerRenderPlugin(js_url=f"{SCHEMA_ASSETS}/swagger-ui-bundle.js",
                                                css_url=f"{SCHEMA_ASSETS}/swagger-ui.css",
                                                standalone_preset_js_url=f"{SCHEMA_ASSETS}/swagger-ui-standalone-preset.js",
                                                path=["/", "/swagger"])]),
        request_max_body_size=MAX_BODY,
    )
