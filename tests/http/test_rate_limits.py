"""Rate limits per credential (issue 11 §3): over the policy's rate a caller gets 429 with
Retry-After and the usual error body; other callers are not affected."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis
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


REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_or_skip() -> None:
    """The shared-limit tests need this machine's Redis; `.ci/run` starts it and requires it."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        if os.environ.get("LETHE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} (set LETHE_TEST_REDIS_URL)")


def within_one_second(calls: Callable[[], list[int]]) -> list[int]:
    """Run `calls` from the start of a second; again if they crossed into the next (a new window)."""
    for _ in range(5):
        time.sleep(1 - time.time() % 1 + 0.01)
        started = int(time.time())
        statuses = calls()
        if int(time.time()) == started:
            return statuses
    raise AssertionError("the calls never fitted in one second")


@pytest.mark.parametrize("shared", [True, False])
def test_api_processes_share_one_limit_through_redis(container: Container, shared: bool) -> None:
    """Two apps stand for two `lethe serve --workers 2` processes. With LETHE_RATE_LIMIT_URL they
    count together: a caller limited to 4/s gets 4 answers between them, then 429. Without it
    each process counts alone and lets 4 through on its own (what the setting is for)."""
    redis_or_skip()
    container.policies.limits = replace(Limits(), partner_requests_per_second=4)
    container.settings = replace(container.settings, rate_limit_url=REDIS_URL if shared else None)
    acme = container.accounts.create_project("acme")
    with TestClient(create_app(container)) as one, TestClient(create_app(container)) as two:
        def calls() -> list[int]:
            return [client.get("/v1/deletion-requests", headers=bearer(acme.api_key)).status_code
                    for client in (one, two, one, two, one, two)]

        statuses = within_one_second(calls)
    assert statuses == ([200, 200, 200, 200, 429, 429] if shared else [200] * 6)


def test_without_redis_requests_go_through_and_a_warning_says_why(container: Container,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    container.policies.limits = replace(Limits(), partner_requests_per_second=2)
    container.settings = replace(container.settings, rate_limit_url="redis://127.0.0.1:1/0")  # nothing listens
    acme = container.accounts.create_project("acme")
    with TestClient(create_app(container)) as client:
        statuses = [client.get("/v1/deletion-requests", headers=bearer(acme.api_key)).status_code for _ in range(4)]
    assert statuses == [200] * 4
    err = capfd.readouterr().err
    assert err.count("rate_limit.store_unavailable") == 1 and "Traceback" not in err
