from typing import Any

import pytest
import structlog
from litestar.testing import TestClient
from prometheus_client import CONTENT_TYPE_LATEST

from tests.http.conftest import bearer


def test_health_ready_metrics(client: TestClient[Any]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "sql": "ok", "clickhouse": "ok",
                                                     "outbox": {"events": 0, "oldest_age_seconds": 0.0}}
    client.get("/v1/deletion-requests")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "lethe_requests_total" in metrics.text
    assert metrics.headers["content-type"] == CONTENT_TYPE_LATEST


def test_openapi_documents_every_route(client: TestClient[Any]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    for route in ["/v1/deletion-requests", "/v1/deletion-requests/{request_id}",
                  "/v1/deletion-requests/{request_id}/restore", "/v1/audit", "/v1/audit/verify",
                  "/v1/audit/export", "/healthz", "/readyz", "/metrics"]:
        assert route in paths, route
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == [
        CONTENT_TYPE_LATEST]  # Prometheus text, not JSON
    for bare in ("/v1/subjects", "/v1/messages", "/v1/suppressions"):  # the slash-only ids' routes
        assert bare not in paths
    extension = client.get("/schema/openapi.json").json()["components"]["schemas"]["ExtensionIn"]
    assert extension["properties"]["months"] == {"type": "integer", "enum": [1, 2],
                                                 "description": "1 or 2 more months (2 in all)"}
    create = paths["/v1/deletion-requests"]["post"]
    assert "202" in create["responses"]
    for route in ["/v1/deletion-requests/batch", "/v1/deletion-requests/batch/{batch_id}", "/v1/callback",
                  "/v1/callback/deliveries", "/v1/holds/{hold_id}/data"]:
        assert route in paths, route
    # routes whose ids may hold `/` are served from the raw path, and documented as routes
    for route, method in [("/v1/subjects/{user_id}", "get"), ("/v1/subjects/{user_id}/export", "get"),
                          ("/v1/messages/{message_id}", "get"),
                          ("/v1/messages/{message_id}/complaints/resolve", "post"),
                          ("/v1/suppressions/{user_id}", "delete")]:
        parameters = [p["name"] for p in paths[route][method]["parameters"] if p["in"] == "path"]
        assert parameters == [route.split("{")[1].split("}")[0]], route
    assert not [route for route in paths if "{rest}" in route]
    answers = {route: paths[route]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
               for route in ("/v1/subjects/{user_id}", "/v1/subjects/{user_id}/export")}
    assert [ref.rsplit("/", 1)[1] for ref in answers.values()] == ["SubjectReport", "SubjectExport"]
    assert not any(route.startswith("/console") for route in paths)  # HTML pages, not API


def test_every_json_answer_has_a_named_schema(client: TestClient[Any]) -> None:
    """Every 2xx JSON answer is documented by a schema of its own, not a bare `object`."""
    untyped = []
    for path, operations in client.get("/schema/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            for code, answer in operation.get("responses", {}).items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or not code.startswith("2"):
                    continue
                # a schema of its own, or a choice between such schemas (report | export)
                if "$ref" not in schema and not all("$ref" in one for one in schema.get("oneOf", [{}])):
                    untyped.append(f"{method.upper()} {path} {code}")
    assert untyped == []


def test_openapi_declares_the_bearer_scheme_where_a_token_is_needed(client: TestClient[Any]) -> None:
    doc = client.get("/schema/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "a partner api_key, a webhook_token or an officer token, as each route says"}
    assert doc["paths"]["/v1/deletion-requests"]["post"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/v1/holds"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    create = doc["paths"]["/v1/deletion-requests"]["post"]
    assert create["operationId"] == "deletionRequestsCreate"
    assert {"401", "403", "404", "409", "413", "422", "429"} <= set(create["responses"])
    assert "409" not in doc["paths"]["/v1/deletion-requests"]["get"]["responses"]
    assert set(doc["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    body = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert len(body["schema"]["oneOf"]) == 2 and body["examples"]["message_sent"]["value"]["event"] == "message_sent"
    # the webhook's 400 is its own answer shape (every envelope rejected), its other errors the common one
    for path in ("/v1/events", "/v1/hooks/{secret}"):
        answers = doc["paths"][path]["post"]["responses"]
        assert answers["400"]["content"]["application/json"]["schema"]["$ref"].endswith("IngestOut"), path
        assert {"401", "403", "413", "429", "503"} <= set(answers), path
        assert answers["503"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody"), path
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_the_api_docs_ui_loads_nothing_from_elsewhere(client: TestClient[Any]) -> None:
    """Swagger UI's scripts and styles come from Lethe itself: the docs work offline."""
    import re

    page = client.get("/schema/swagger")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/schema-assets/") or a.startswith("/schema/") for a in assets), assets
    for asset in assets:
        if asset.startswith("/schema-assets/"):
            assert client.get(asset).status_code == 200, asset


def test_refusals_are_not_error_lines(client: TestClient[Any], keys: dict[str, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4xx is the caller's mistake, answered and counted: logging each as an error with a
    traceback let anyone flood the error log (NotFound and Conflict slipped past Litestar's
    exact-class filter)."""
    lines: list[str] = []
    for method in ("msg", "error", "exception", "critical", "err", "failure", "log"):
        monkeypatch.setattr(structlog.PrintLogger, method, lambda self, message: lines.append(message), raising=False)
    partner = bearer(keys["api_key"])
    made = client.post("/v1/deletion-requests", json={"user_id": "u-quiet", "mode": "immediate"}, headers=partner)
    answers = [
        client.get("/v1/deletion-requests/no-such-request", headers=partner),  # NotFound (a service error)
        client.post(f"/v1/deletion-requests/{made.json()['id']}/restore", headers=partner),  # Conflict
        client.get("/v1/deletion-requests?limit=9999", headers=partner),  # validation
        client.get("/v1/deletion-requests"),  # no credential
        client.get("/v1/holds", headers=partner),  # wrong role
        client.post("/console/holds", data={}, follow_redirects=False),  # no console session: to the login
    ]
    assert [a.status_code for a in answers] == [404, 409, 400, 401, 403, 303]
    assert not [line for line in lines if '"level": "error"' in line or "Traceback" in line], lines
