"""The Litestar application factory."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from litestar import Litestar, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.logging.config import StructLoggingConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Parameter, PathItem, SecurityScheme
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.bootstrap import Container
from app.http.audit import AuditController
from app.http.auth import auth_middleware
from app.http.callbacks import CallbackController
from app.http.console import ConsoleController
from app.http.deletion_requests import DeletionRequestController
from app.http.deps import dependencies
from app.http.errors import HANDLERS, log_fault
from app.http.events import EventsController, HooksController
from app.http.holds import HoldController
from app.http.inputs import MAX_BODY, RefuseUnstorableInput
from app.http.limits import RedisWindows, rate_limits
from app.http.messages import MessagesController, SubjectsController
from app.http.metrics import MetricsController
from app.http.officer import OfficerController
from app.http.ops import healthz, readyz
from app.http.schemas import TYPE_DECODERS, ErrorBody, StrictTypesSchema
from app.http.suppressions import SuppressionsController
from app.logging import bound_logger, processors, stderr_logger
from app.observability import REQUEST_CENSUS

SCHEMA_ASSETS = "/schema-assets"  # the API docs' scripts and styles, served here (public, like /schema)
HTTP_DIR = Path(__file__).resolve().parent  # templates/ and static/ (the console's; no CDN)


def operation_id(handler: HTTPRouteHandler, method: Method, path: list[str | PathParameterDefinition]) -> str:
    """Readable operation ids: the route's tag and the handler's name, e.g. `deletionRequestsCreate`,
    `holdsPlace`, `auditVerify` (Litestar refuses duplicates when it builds the document)."""
    tags = handler.resolve_tags()
    words = [w for w in re.split(r"[^A-Za-z0-9]+", tags[0] if tags else "") if w] + handler.handler_name.split("_")
    return words[0].lower() + "".join(w.capitalize() for w in words[1:])


class Metrics(PrometheusController):
    """`GET /metrics`: Prometheus text exposition (not JSON), documented as such."""

    tags = ["operations"]

    @get(media_type=CONTENT_TYPE_LATEST, operation_id="metrics", summary="Prometheus metrics",
         description="Counters and gauges in Prometheus' text format (no user data in any label): requests by "
                     "status, events, erasure runs, the outbox's depth and age, the audit chain's state.",
         response_description="Prometheus text exposition format")
    async def get(self) -> Response[bytes]:
        return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def serve_app() -> Litestar:
    """One of `lethe serve --workers N`'s API processes (uvicorn's factory): settings from the
    environment, no scheduler (the parent process runs it and owns the embedded ClickHouse)."""
    from app.bootstrap import build
    from app.config import get_settings

    container = build(get_settings())
    container.clickhouse_in_worker = container.settings.embedded_clickhouse
    return create_app(container)


def create_app(container: Container) -> Litestar:
    REQUEST_CENSUS.watch(container.uow, container.now)  # /metrics counts requests by status
    prometheus = PrometheusConfig(app_name="lethe", prefix="lethe", group_path=True,
                                  exclude=["^/metrics", "^/healthz"])
    logging = StructlogPlugin(StructlogConfig(
        structlog_logging_config=StructLoggingConfig(
            processors=processors(), log_exceptions="always",
            wrapper_class=bound_logger(container.settings.log_level),
            exception_logging_handler=log_fault,  # faults only: a 4xx or 503 is not an error line
            # made on each use, on the stderr of that moment: a logger or factory kept from an
            # earlier app (in tests, an earlier test's captured stderr) may hold a closed stream
            logger_factory=stderr_logger, cache_logger_on_first_use=False,
        ),
        enable_middleware_logging=False,  # request logs would print paths and queries naming users
    ))
    # several API processes share their rate-limit counters in Redis (app.http.limits)
    shared = RedisWindows(container.settings.rate_limit_url) if container.settings.rate_limit_url else None
    app = Litestar(
        on_shutdown=[shared.close] if shared is not None else [],
        route_handlers=[healthz, readyz, Metrics, DeletionRequestController, CallbackController, AuditController,
                        EventsController, HooksController, MessagesController, SubjectsController, HoldController,
                        OfficerController, MetricsController, SuppressionsController, ConsoleController,
                        create_static_files_router(path="/console-static", directories=[HTTP_DIR / "static"],
                                                   include_in_schema=False),
                        create_static_files_router(path=SCHEMA_ASSETS, directories=[swagger_ui_bundle.swagger_ui_path],
                                                   include_in_schema=False)],
        template_config=TemplateConfig(directory=HTTP_DIR / "templates", engine=JinjaTemplateEngine),
        dependencies=dependencies(container),
        middleware=[prometheus.middleware, RefuseUnstorableInput,
                    auth_middleware(container.accounts, container.webhooks),
                    *rate_limits(container.policies.limits, shared)],
        exception_handlers=HANDLERS,
        plugins=[logging, StrictTypesSchema()],
        type_decoders=TYPE_DECODERS,
        openapi_config=OpenAPIConfig(
            title="Lethe", version="0.1.0", description="GDPR data-lifecycle and deletion service",
            operation_id_creator=operation_id,
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
    document_errors(app)
    document_raw_paths(app)
    return app


# Routes whose ids may hold any character, `/` included, are one `{rest:path}` handler each
# that reads the id from the raw path (app.http.inputs.raw_segments). The OpenAPI document
# shows the routes they serve instead: raw path -> (path, method, id parameter, operation id,
# summary, which of the handler's 200 schemas (oneOf) this route answers, or None for its only one).
RAW_ROUTES: dict[str, list[tuple[str, str, str, str, str, int | None]]] = {
    "/v1/subjects/{rest}": [
        ("/v1/subjects/{user_id}", "get", "user_id", "subjectsReport",
         "The access report (officer): what Lethe holds about the user, per store, in counts", 0),
        ("/v1/subjects/{user_id}/export", "get", "user_id", "subjectsExport",
         "Everything held about the user, decrypted (partner or officer; GDPR Art. 15/20)", 1)],
    "/v1/messages/{rest}": [
        ("/v1/messages/{message_id}", "get", "message_id", "messagesRead", "A message's state", None),
        ("/v1/messages/{message_id}/complaints/resolve", "post", "message_id", "messagesResolveComplaints",
         "Process the message's open complaints", None)],
    "/v1/suppressions/{rest}": [
        ("/v1/suppressions/{user_id}", "delete", "user_id", "suppressionsLift", "End a user's suppression", None)],
}


def document_raw_paths(app: Litestar) -> None:
    """Rewrite the OpenAPI document's `{rest}` paths as the routes they serve (RAW_ROUTES)."""
    paths = app.openapi_schema.paths
    if paths is None:
        return
    for raw, routes in RAW_ROUTES.items():
        item = paths.pop(raw)
        for path, method, name, operation_id, summary, answer in routes:
            operation = copy.deepcopy(getattr(item, method))
            operation.operation_id, operation.summary = operation_id, summary
            for parameter in operation.parameters or []:
                if isinstance(parameter, Parameter) and parameter.name == "rest":
                    parameter.name = name
                    parameter.description = "percent-encoded: any character, `/` included"
            if answer is not None:
                media = operation.responses["200"].content["application/json"]
                media.schema = media.schema.one_of[answer]
            setattr(paths.setdefault(path, PathItem()), method, operation)


ERRORS = {
    401: "no or unknown credentials",
    403: "a known token of the wrong role, or a method this project does not accept",
    404: "not found (another project's object is not found either)",
    409: "conflict with the object's state; `detail` says why",
    413: "the body is larger than 10 MiB",
    422: "an Idempotency-Key reused with another body",
    429: "too many requests for this key; see Retry-After",
    503: "a store does not answer; see Retry-After",
}


def document_errors(app: Litestar) -> None:
    """Add the error answers every token-protected route can give to the OpenAPI document
    (Litestar documents 400 by itself); before the document is first built, at start-up."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_security():
                continue
            reads = handler.http_methods <= {"GET", "HEAD"}  # no body: no 409, 413 or 422
            specs = {code: ResponseSpec(data_container=ErrorBody, description=text) for code, text in ERRORS.items()
                     if not (reads and code in (409, 413, 422))}
            handler.responses = {**specs, **(handler.responses or {})}
