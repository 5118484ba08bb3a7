"""The officers' console in a real browser (issue 8): Debian's Chromium driven by Playwright
against a real HTTP server (uvicorn, in a thread) on this test's stores. Screenshots of each page
go to the test's tmp directory. `make test` installs chromium when it is missing (as root), or
says what to install; these tests never skip silently."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Page, sync_playwright

from app.bootstrap import Container
from app.http.app import create_app
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def server(container: Container) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(container), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "the console server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


@pytest.fixture
def page() -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed for the browser tests: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(accept_downloads=True)
        yield context.new_page()
        browser.close()


def log_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/queue")


def test_an_officer_works_through_the_console(server: str, page: Page, container: Container, clock: FakeClock,
                                              keys: dict[str, str], tmp_path: Path) -> None:
    from tests.http.conftest import bearer

    def shot(name: str) -> None:
        page.screenshot(path=str(tmp_path / f"console-{name}.png"), full_page=True)

    client = _api(server)
    late = client.post("/v1/deletion-requests", json={"user_id": "late-user"}, headers=bearer(keys["api_key"])).json()
    clock.advance(days=40)
    client.post("/v1/deletion-requests", json={"user_id": "fresh-user"}, headers=bearer(keys["api_key"]))

    log_in(page, server, keys["officer"])
    first = page.locator("tbody tr").first
    assert late["id"][:8] in first.inner_text() and "overdue" in first.inner_text()  # overdue at the top
    shot("queue")

    page.goto(f"{server}/console/holds")
    page.select_option("select[name=scope]", "user")
    page.fill("input[name=target]", "fresh-user")
    page.fill("input[name=reason]", "court order 12/2026")
    page.click("text=Place hold")
    assert "court order 12/2026" in page.inner_text("table")
    shot("holds")
    container.erasure.anonymise(clock.now)  # a job run
    page.goto(f"{server}/console/queue?status=on_hold")
    assert page.locator("tbody tr").count() == 1
    page.locator("tbody tr a").first.click()
    assert "on_hold" in page.inner_text("main") and "stops this request" in page.inner_text("main")
    shot("request")
    page.goto(f"{server}/console/holds")
    page.click("text=Release")
    assert "released" in page.inner_text("table")

    page.goto(f"{server}/console/audit")
    page.click("text=Verify the chain now")
    assert "The chain is intact" in page.inner_text("main")
    shot("audit")
    with page.expect_download() as download:
        page.click("text=CSV")
    csv = Path(download.value.path()).read_text()
    assert csv.startswith("seq,") and "hold.placed" in csv

    page.goto(f"{server}/console/metrics")
    assert "DAU" in page.inner_text("main")
    shot("metrics")

    # a forged post from another site: no CSRF token, refused
    forged = page.request.post(f"{server}/console/holds", form={"project": PROJECT, "scope": "project",
                                                                "target": PROJECT, "reason": "forged"})
    assert forged.status == 403
    assert all((tmp_path / f"console-{n}.png").stat().st_size > 0 for n in ("queue", "holds", "request", "audit"))


def test_a_second_officer_cannot_see_the_first_ones_project(server: str, page: Page, container: Container,
                                                            keys: dict[str, str]) -> None:
    from tests.http.conftest import bearer

    made = _api(server).post("/v1/deletion-requests", json={"user_id": "secret-user"},
                             headers=bearer(keys["api_key"])).json()
    container.accounts.create_project("other-partner")
    token = container.accounts.create_officer("oscar", ["other-partner"]).token
    log_in(page, server, token)
    assert made["id"][:8] not in page.inner_text("main")
    page.goto(f"{server}/console/requests/{made['id']}")
    assert "not found" in page.inner_text("main") and "secret-user" not in page.content()


def _api(base: str) -> Any:
    import httpx

    return httpx.Client(base_url=base, timeout=10)
