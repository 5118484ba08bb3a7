"""Compliance officers over HTTP."""

import csv
import io
import json
from typing import Any

from litestar.testing import TestClient
from prometheus_client import REGISTRY

from app.bootstrap import Container
from app.observability import audit_verified
from tests.http.conftest import bearer


def setup(client: TestClient[Any], container: Container, project: dict[str, str]) -> str:
    container.accounts.create_project("other")
    officer = container.accounts.create_officer("olga", ["acme"]).token
    for user in ("u-1", "u-2"):
        client.post("/v1/deletion-requests", json={"user_id": user}, headers=bearer(project["api_key"]))
    return officer


def test_officer_reads_filters_and_never_sees_user_ids(client: TestClient[Any], container: Container,
                                                       project: dict[str, str]) -> None:
    officer = setup(client, container, project)
    page = client.get("/v1/audit", headers=bearer(officer)).json()
    assert [e["action"] for e in page["items"]] == ["project.created", "officer.created",
                                                    "deletion_request.created", "deletion_request.created"]
    assert all(e["project"] == "acme" for e in page["items"])  # not the other project's entries
    assert "u-1" not in json.dumps(page)
    one = client.get("/v1/audit", params={"user_id": "u-1"}, headers=bearer(officer)).json()["items"]
    assert len(one) == 1 and one[0]["subject"]
    by_action = client.get("/v1/audit", params={"action": "project.created"}, headers=bearer(officer)).json()
    assert len(by_action["items"]) == 1
    future = client.get("/v1/audit", params={"since": "2100-01-01T00:00:00Z"}, headers=bearer(officer)).json()
    assert future["items"] == []
    assert client.get("/v1/audit", params={"project": "other"}, headers=bearer(officer)).status_code == 404


def test_verify_and_export(client: TestClient[Any], container: Container, project: dict[str, str]) -> None:
    officer = setup(client, container, project)
    audit_verified(False, 0)  # what an earlier test of this process left: not this verification
    verify = client.get("/v1/audit/verify", headers=bearer(officer)).json()
    assert verify["ok"] is True and verify["first_bad_seq"] is None and verify["entries"] >= 4
    # /metrics says so at once, not only after the nightly audit_verify job
    assert REGISTRY.get_sample_value("lethe_audit_chain_ok") == 1
    assert REGISTRY.get_sample_value("lethe_audit_chain_entries") == verify["entries"]
    jsonl = client.get("/v1/audit/export", params={"format": "jsonl"}, headers=bearer(officer))
    assert jsonl.status_code == 200 and "attachment" in jsonl.headers["content-disposition"]
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [e["action"] for e in lines] == ["project.created", "officer.created", "deletion_request.created",
                                            "deletion_request.created"]
    exported = client.get("/v1/audit/export", params={"format": "csv"}, headers=bearer(officer))
    assert exported.headers["content-type"].startswith("text/csv")
    assert len(list(csv.DictReader(io.StringIO(exported.text)))) == 4
    assert client.get("/v1/audit/export", params={"format": "xml"}, headers=bearer(officer)).status_code == 400
    # the list's filters hold for the download too
    for params, actions in (({"user_id": "u-1"}, ["deletion_request.created"]),
                            ({"action": "officer.created"}, ["officer.created"]),
                            ({"user_id": "u-1", "action": "project.created"}, [])):
        filtered = client.get("/v1/audit/export", params=params, headers=bearer(officer)).text.splitlines()
        listed = client.get("/v1/audit", params=params, headers=bearer(officer)).json()["items"]
        assert [json.loads(line)["action"] for line in filtered] == [e["action"] for e in listed] == actions


def test_partner_cannot_read_the_audit_log(client: TestClient[Any], project: dict[str, str]) -> None:
    refused = client.get("/v1/audit", headers=bearer(project["api_key"]))
    assert (refused.status_code, refused.json()["detail"]) == (
        403, "this endpoint needs an officer token, not a partner token")


def test_officers_read_the_signed_checkpoints_newest_first(client: TestClient[Any], container: Container,
                                                            project: dict[str, str]) -> None:
    officer = container.accounts.create_officer("olga", ["acme"]).token
    first = container.audit.checkpoint(container.now())
    container.accounts.create_project("beta")
    second = container.audit.checkpoint(container.now())
    page = client.get("/v1/audit/checkpoints", params={"limit": 1}, headers=bearer(officer)).json()
    assert page["items"] == [second] and page["next_cursor"]
    rest = client.get("/v1/audit/checkpoints", params={"limit": 1, "cursor": page["next_cursor"]},
                      headers=bearer(officer)).json()
    assert rest == {"items": [first], "next_cursor": None}
    again = container.audit.checkpoint(container.now())  # the same head signed twice: both listed
    assert again["seq"] == second["seq"]
    pages, cursor = [], None
    while True:
        page = client.get("/v1/audit/checkpoints", params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                          headers=bearer(officer)).json()
        pages += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert pages == [again, second, first]
    assert client.get("/v1/audit/checkpoints").status_code == 401
    assert client.get("/v1/audit/checkpoints", headers=bearer(project["api_key"])).status_code == 403
    verified = client.get("/v1/audit/verify", headers=bearer(officer)).json()
    assert verified["ok"] is True and verified["problem"] is None
