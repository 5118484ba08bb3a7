"""The officers' queue (issue 8, CONTRACT §3 "Officers"): deletion requests across their
projects with deadlines, `overdue`, timelines, filters and paging, and Art. 12(3) extensions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from app.bootstrap import Container
from tests.conftest import FakeClock
from tests.http.conftest import bearer

QUEUE = "/v1/officer/deletion-requests"


def ask(client: TestClient[Any], key: str, user: str, mode: str = "grace") -> dict[str, Any]:
    response = client.post("/v1/deletion-requests", json={"user_id": user, "mode": mode}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def test_officers_see_their_projects_requests_with_deadlines_and_timelines(
    client: TestClient[Any], container: Container, clock: FakeClock
) -> None:
    acme = container.accounts.create_project("acme")
    beta = container.accounts.create_project("beta")
    hidden = container.accounts.create_project("not-mine")
    officer = container.accounts.create_officer("olga", ["acme", "beta"]).token
    first = ask(client, acme.api_key, "u-1")
    clock.advance(minutes=1)
    second = ask(client, beta.api_key, "u-2")
    ask(client, hidden.api_key, "u-3")
    container.erasure.anonymise(clock.now)

    page = client.get(QUEUE, headers=bearer(officer)).json()
    assert [r["id"] for r in page["items"]] == [second["id"], first["id"]] and page["next_cursor"] is None
    item = page["items"][1]
    assert (item["project"], item["user_id"], item["status"]) == ("acme", "u-1", "in_grace")
    assert item["due_by"] == (datetime.fromisoformat(first["requested_at"]) + timedelta(days=31)).isoformat()
    assert item["overdue"] is False
    assert [e["action"] for e in item["timeline"]] == ["deletion_request.created", "deletion_request.anonymised"]
    assert all(e["details"]["request_id"] == first["id"] for e in item["timeline"])

    only_beta = client.get(QUEUE, params={"project": "beta"}, headers=bearer(officer)).json()["items"]
    assert [r["id"] for r in only_beta] == [second["id"]]
    assert client.get(QUEUE, params={"project": "not-mine"}, headers=bearer(officer)).status_code == 404
    first_page = client.get(QUEUE, params={"limit": 1}, headers=bearer(officer)).json()
    rest = client.get(QUEUE, params={"limit": 1, "cursor": first_page["next_cursor"]}, headers=bearer(officer)).json()
    assert [r["id"] for r in first_page["items"] + rest["items"]] == [second["id"], first["id"]]
    by_source = client.get(QUEUE, params={"source": "user"}, headers=bearer(officer)).json()["items"]
    assert by_source == []
    assert client.get(QUEUE, headers=bearer(acme.api_key)).status_code == 403
    assert client.get(QUEUE).status_code == 401


def test_overdue_requests_are_flagged_filtered_and_extended_by_at_most_two_months(
    client: TestClient[Any], container: Container, clock: FakeClock
) -> None:
    acme = container.accounts.create_project("acme")
    officer = container.accounts.create_officer("olga", ["acme"]).token
    late = ask(client, acme.api_key, "u-late")
    clock.advance(days=40)  # no job ran: still pending, past its one-month deadline
    fresh = ask(client, acme.api_key, "u-fresh")
    overdue = client.get(QUEUE, params={"overdue": "true"}, headers=bearer(officer)).json()["items"]
    assert [r["id"] for r in overdue] == [late["id"]] and overdue[0]["overdue"] is True
    on_time = client.get(QUEUE, params={"overdue": "false"}, headers=bearer(officer)).json()["items"]
    assert [r["id"] for r in on_time] == [fresh["id"]]
    due_soon = client.get(QUEUE, params={"due_before": (clock.now + timedelta(days=1)).isoformat()},
                          headers=bearer(officer)).json()["items"]
    assert [r["id"] for r in due_soon] == [late["id"]]
    partner_view = client.get(f"/v1/deletion-requests/{late['id']}", headers=bearer(acme.api_key)).json()
    assert partner_view["overdue"] is True  # partners see the same deadline fields

    extend = f"{QUEUE}/{late['id']}/extend"
    extended = client.post(extend, json={"months": 2, "reason": "complex request"}, headers=bearer(officer))
    assert extended.status_code == 200, extended.text
    assert extended.json()["due_by"] > late["due_by"] and extended.json()["overdue"] is False
    assert extended.json()["due_extended_months"] == 2
    assert extended.json()["due_extension_reason"] == "complex request"  # the officer's view, at once
    assert "deletion_request.deadline_extended" in [e["action"] for e in extended.json()["timeline"]]
    listed = client.get(QUEUE, params={"overdue": "false"}, headers=bearer(officer)).json()["items"]
    assert {r["id"]: r["due_extension_reason"] for r in listed}[late["id"]] == "complex request"
    assert "due_extension_reason" not in client.get(f"/v1/deletion-requests/{late['id']}",
                                                    headers=bearer(acme.api_key)).json()  # officers only
    refused = client.post(extend, json={"months": 1, "reason": "again"}, headers=bearer(officer))
    assert refused.status_code == 409 and "2 months in all" in refused.json()["detail"]
    assert client.post(extend, json={"months": 3, "reason": "x"}, headers=bearer(officer)).status_code == 400
    for loose in ("1", 1.0, True, None):  # a JSON integer only: no lax conversion of strings or floats
        refused_type = client.post(extend, json={"months": loose, "reason": "x"}, headers=bearer(officer))
        assert refused_type.status_code == 400 and "months" in refused_type.text, loose
    assert client.post(f"{QUEUE}/nope/extend", json={"months": 1, "reason": "x"},
                       headers=bearer(officer)).status_code == 404
    audit = client.get("/v1/audit", params={"action": "deletion_request.deadline_extended"},
                       headers=bearer(officer)).json()["items"]
    assert len(audit) == 1 and audit[0]["details"]["months"] == 2 and "complex" not in str(audit[0])
    assert audit[0]["subject"]  # the user's keyed hash: the user's audit trail shows the extension


def test_a_revoked_officer_token_stops_working(client: TestClient[Any], container: Container) -> None:
    container.accounts.create_project("acme")
    token = container.accounts.create_officer("olga", ["acme"]).token
    assert client.get(QUEUE, headers=bearer(token)).status_code == 200
    container.accounts.revoke_officer("olga")
    assert client.get(QUEUE, headers=bearer(token)).status_code == 401
