"""The officers' web console (issue 8, in part), through Litestar's test client on SQLite and
PostgreSQL: login and session cookie, the queue with overdue requests first, holds placed and
released from forms, the audit log verified and exported, officers kept to their projects,
forged posts refused."""

from __future__ import annotations

import json
import re
from typing import Any

from litestar.testing import TestClient

from app.bootstrap import Container
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT
from tests.http.conftest import bearer


def log_in(client: TestClient[Any], token: str) -> str:
    """Log in; returns the page's CSRF token."""
    answer = client.post("/console/login", data={"token": token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/queue", answer.text
    page = client.get("/console/queue")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_login_sets_a_strict_http_only_session_cookie_and_logout_ends_it(client: TestClient[Any],
                                                                          keys: dict[str, str]) -> None:
    assert client.get("/console/queue", follow_redirects=False).headers["location"] == "/console/login"
    wrong = client.post("/console/login", data={"token": keys["api_key"]}, follow_redirects=False)
    assert wrong.status_code == 401 and "not a valid officer token" in wrong.text  # a partner key is not one
    answer = client.post("/console/login", data={"token": keys["officer"]}, follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # plain http here
    assert keys["officer"] not in answer.headers["set-cookie"]  # the token never leaves the server again
    csrf = log_in(client, keys["officer"])
    page = client.get("/console/queue")
    assert "olga" in page.text and "http://" not in page.text and "https://" not in page.text  # no CDN
    assert client.get("/console-static/console.css").status_code == 200
    client.post("/console/logout", data={"csrf": csrf})
    assert client.get("/console/queue", follow_redirects=False).status_code == 303


def test_a_login_posted_from_another_site_is_refused(client: TestClient[Any], keys: dict[str, str]) -> None:
    """Login CSRF: a page elsewhere must not log the officer's browser into a session of its
    choosing (there is no session, so no CSRF token yet: the browser's origin headers decide)."""
    for headers in ({"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
                    {"origin": "https://evil.example"}, {"origin": "null"}):
        answer = client.post("/console/login", data={"token": keys["officer"]}, headers=headers,
                             follow_redirects=False)
        assert answer.status_code == 403 and "cross-site" in answer.text, headers
        assert "set-cookie" not in answer.headers
    for headers in ({"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"},
                    {"origin": "http://testserver.local"}, {},
                    {"origin": "https://lethe.example", "x-forwarded-host": "lethe.example"}):  # behind a proxy
        answer = client.post("/console/login", data={"token": keys["officer"]}, headers=headers,
                             follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/queue", headers


def test_the_queue_shows_overdue_requests_first(client: TestClient[Any], keys: dict[str, str],
                                                clock: FakeClock) -> None:
    old = client.post("/v1/deletion-requests", json={"user_id": "late"}, headers=bearer(keys["api_key"])).json()
    clock.advance(days=40)  # past its one-month deadline, and still pending (no job ran)
    new = client.post("/v1/deletion-requests", json={"user_id": "fresh"}, headers=bearer(keys["api_key"])).json()
    log_in(client, keys["officer"])
    page = client.get("/console/queue").text
    assert page.index(old["id"][:8]) < page.index(new["id"][:8]) and "overdue" in page
    only = client.get("/console/queue", params={"overdue": "yes"}).text
    assert old["id"][:8] in only and new["id"][:8] not in only
    detail = client.get(f"/console/requests/{old['id']}").text
    assert "late" in detail and "overdue" in detail and "deletion_request.created" in detail


def test_holds_are_placed_and_released_from_the_forms(client: TestClient[Any], keys: dict[str, str],
                                                      container: Container, clock: FakeClock) -> None:
    created = client.post("/v1/deletion-requests", json={"user_id": "u-held"}, headers=bearer(keys["api_key"])).json()
    csrf = log_in(client, keys["officer"])
    placed = client.post("/console/holds", data={"csrf": csrf, "project": PROJECT, "scope": "user",
                                                 "target": "u-held", "reason": "court order 7"})
    assert placed.status_code == 200 and "court order 7" in placed.text  # followed to the list
    container.erasure.anonymise(clock.now)
    assert "on_hold" in client.get(f"/console/requests/{created['id']}").text
    hold_id = re.search(r'action="/console/holds/([^/]+)/release"', client.get("/console/holds").text)
    assert hold_id
    client.post(f"/console/holds/{hold_id.group(1)}/release", data={"csrf": csrf})
    assert "released" in client.get("/console/holds").text
    clock.advance(minutes=1)
    container.erasure.anonymise(clock.now)
    assert "in_grace" in client.get(f"/console/requests/{created['id']}").text
    # the API's rules, said in a sentence naming the field (not a stack trace, not a silent drop)
    for field, value, said in (("target", "", "missing required field `target`"),
                               ("target", "t" * 201, "at `target`"),
                               ("expires_at", "31/12/2027", "at `expires_at`"),
                               ("expires_at", "2020-01-01T00:00", "expires_at: must be in the future")):
        bad = client.post("/console/holds", data={"csrf": csrf, "project": PROJECT, "scope": "room", "target": "r-1",
                                                  "reason": "x", field: value})
        assert bad.status_code == 400 and said in bad.text, (field, value)
    assert client.get("/console/holds").text.count("/release") == 0  # none of them was placed


def test_a_forged_post_without_the_csrf_token_is_refused(client: TestClient[Any], keys: dict[str, str]) -> None:
    log_in(client, keys["officer"])
    forged = client.post("/console/holds", data={"project": PROJECT, "scope": "project", "target": PROJECT,
                                                 "reason": "forged"})
    assert forged.status_code == 403 and "CSRF token missing or wrong" in forged.text and "<html" in forged.text
    wrong = client.post("/console/audit/verify", data={"csrf": "guess"})
    assert wrong.status_code == 403
    assert "forged" not in client.get("/console/holds").text


def test_the_audit_page_verifies_the_chain_and_exports_the_officers_projects_only(
        client: TestClient[Any], keys: dict[str, str], container: Container) -> None:
    container.accounts.create_project("other-partner")
    csrf = log_in(client, keys["officer"])
    verified = client.post("/console/audit/verify", data={"csrf": csrf})
    assert verified.status_code == 200 and "The chain is intact" in verified.text
    export = client.get("/console/audit/export/csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert PROJECT in export.text and "other-partner" not in export.text
    assert "project.created" in client.get("/console/audit").text


def test_the_audit_export_takes_the_pages_filter_and_names_a_wrong_format(
        client: TestClient[Any], keys: dict[str, str]) -> None:
    client.post("/v1/deletion-requests", json={"user_id": "u-1"}, headers=bearer(keys["api_key"]))
    log_in(client, keys["officer"])
    page = client.get("/console/audit", params={"action": "deletion_request.created"}).text
    assert "/console/audit/export/jsonl?action=deletion_request.created" in page
    lines = client.get("/console/audit/export/jsonl", params={"action": "deletion_request.created"}).text.splitlines()
    assert lines and {json.loads(line)["action"] for line in lines} == {"deletion_request.created"}
    everything = client.get("/console/audit/export/jsonl").text.splitlines()
    assert len(everything) > len(lines)
    wrong = client.get("/console/audit/export/xml")
    assert wrong.status_code == 400 and "no export format &#39;xml&#39;" in wrong.text and "<html" in wrong.text


def test_an_officer_sees_only_their_projects(client: TestClient[Any], keys: dict[str, str],
                                             container: Container) -> None:
    theirs = client.post("/v1/deletion-requests", json={"user_id": "u-1"}, headers=bearer(keys["api_key"])).json()
    container.accounts.create_project("other-partner")
    second = container.accounts.create_officer("oscar", ["other-partner"]).token
    log_in(client, second)
    assert theirs["id"][:8] not in client.get("/console/queue").text
    detail = client.get(f"/console/requests/{theirs['id']}")
    assert detail.status_code == 404 and "not found" in detail.text and "u-1" not in detail.text
    assert PROJECT not in client.get("/console/holds").text
    assert PROJECT not in client.get("/console/metrics").text


def test_a_revoked_officer_is_logged_out_and_metrics_render_as_svg(client: TestClient[Any], keys: dict[str, str],
                                                                  container: Container) -> None:
    log_in(client, keys["officer"])
    metrics = client.get("/console/metrics", params={"days": "180"})
    assert metrics.status_code == 200 and "No DAU for this period yet" in metrics.text
    container.accounts.revoke_officer("olga")
    container.accounts.forget()
    assert client.get("/console/queue", follow_redirects=False).headers["location"] == "/console/login"


def test_a_session_is_known_to_every_api_process_and_ends_in_all_of_them(container: Container,
                                                                         keys: dict[str, str]) -> None:
    """Two apps stand for two API processes (`lethe serve --workers 2`): a browser logged in on
    one is logged in on the other; a logout on either ends it everywhere. The store holds a
    hash of the session id, never the id the cookie carries."""
    from sqlalchemy import select

    from app.http.app import create_app
    from app.models import AuditEntry, ConsoleSession

    with TestClient(create_app(container)) as one, TestClient(create_app(container)) as two:
        csrf = log_in(one, keys["officer"])
        sid = one.cookies["lethe_console"]
        two.cookies.set("lethe_console", sid)
        assert two.get("/console/queue", follow_redirects=False).status_code == 200
        with container.uow() as uow:
            (stored,) = uow.session.scalars(select(ConsoleSession))
        assert stored.id_hash != sid and sid not in stored.id_hash and keys["officer"] not in stored.token_hash
        two.post("/console/logout", data={"csrf": csrf})
        assert one.get("/console/queue", follow_redirects=False).headers["location"] == "/console/login"
    with container.uow() as uow:
        actions = list(uow.session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("console.%"))
                                           .order_by(AuditEntry.seq)))
    assert actions == ["console.login", "console.logout"]


def test_a_session_ends_after_thirty_idle_minutes(client: TestClient[Any], keys: dict[str, str],
                                                  clock: FakeClock) -> None:
    log_in(client, keys["officer"])
    clock.advance(minutes=29)
    assert client.get("/console/queue", follow_redirects=False).status_code == 200  # and seen again now
    clock.advance(minutes=29)
    assert client.get("/console/queue", follow_redirects=False).status_code == 200
    clock.advance(minutes=31)
    assert client.get("/console/queue", follow_redirects=False).headers["location"] == "/console/login"
