"""Schemathesis against the real app on SQLite and PostgreSQL (issue 11): generated requests,
a bounded number per operation, must never get a 5xx, and every response must match the
documented schema. Each operation is called with the credential of the role it is for.

Operations are driven one by one with Hypothesis (schemathesis's pytest plugin does not run
under pytest 9)."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from app.bootstrap import Container
from app.http.app import create_app
from tests.fixtures.platform import PROJECT

EXAMPLES = int(os.environ.get("LETHE_FUZZ_EXAMPLES", "50"))  # per operation and store: well under a minute in all


def role_for(path: str, method: str) -> str:
    if path.startswith("/v1/events") and method == "POST":
        return "webhook"
    if path.startswith(("/v1/audit", "/v1/holds")) or path == "/v1/subjects/{user_id}":
        return "officer"
    return "partner"


def test_no_generated_request_gets_a_server_error_or_breaks_the_schema(container: Container) -> None:
    keys = container.accounts.create_project(PROJECT)
    tokens = {"partner": keys.api_key, "webhook": keys.webhook_token,
              "officer": container.accounts.create_officer("olga", [PROJECT]).token}
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(container))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        token = tokens[role_for(operation.path, operation.method.upper())]

        try:
            _fuzz(operation, {"Authorization": f"Bearer {token}"})
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, not only the first
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        case.call_and_validate(headers=headers,
                               checks=[not_a_server_error, content_type_conformance, response_schema_conformance])

    call()
