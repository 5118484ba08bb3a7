"""Rate limits per credential (issue 11 §3): over the policy's rate a caller gets 429 with
Retry-After and the usual error body; other callers are not affected."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from litestar.testing import TestClient

from app.bootstrap import Container
from app.domain.policy import Limits, PolicyError
from app.http.app import create_app
from app.services.policies import PolicyBook
from tests.http.conftest import bearer


def test_a_caller_over_its_rate_gets_429_with_retry_after_and_others_do_not(
    container: Container, capfd: pytest.CaptureFixture[str]
) -> None:
    container.policies.limits = replace(Limits(), partner_requests_per_second=3)
    acme = container.accounts.create_project("acme")
    other = container.accounts.create_project("other")
    with TestClient(create_app(container)) as client:
        answers = []
        for _ in range(30):  # a busy machine may cross a one-second window between two calls
            answers.append(client.get("/v1/deletion-requests", headers=bearer(acme.api_key)))
            if answers[-1].status_code == 429:
                break
        statuses = [r.status_code for r in answers]
        assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429, statuses
        refused = answers[-1]
        assert int(refused.headers["retry-after"]) >= 1
        assert set(refused.json()) == {"status_code", "detail", "extra"} and "too many requests" in refused.json()[
            "detail"]
        assert client.get("/v1/deletion-requests", headers=bearer(other.api_key)).status_code == 200
        assert client.get("/healthz").status_code == 200  # operations endpoints are not limited
        assert client.get("/v1/deletion-requests").status_code == 401  # no credential: 401, not 429
    assert "Traceback" not in capfd.readouterr().err  # a refusal is not a fault: no traceback logged


def test_limits_come_from_the_policy_and_bad_ones_are_refused(tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text("[limits]\npartner_requests_per_second = 7\n")
    assert PolicyBook.load(tmp_path).limits == Limits(partner_requests_per_second=7)
    (tmp_path / "default.toml").write_text("[limits]\npartner_requests_per_second = 0\n")
    with pytest.raises(PolicyError, match=r"limits\.partner_requests_per_second must be a positive integer"):
        PolicyBook.load(tmp_path)
    (tmp_path / "default.toml").write_text("[limits]\nburst = 3\n")
    with pytest.raises(PolicyError, match=r"unknown key limits\.burst"):
        PolicyBook.load(tmp_path)
