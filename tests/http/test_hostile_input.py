"""No input gets a 5xx (issue 11): each bad envelope is refused on its own, by index, and kept
as a dead letter; the good ones in the same batch are stored. Every other route answers bad
bytes, NUL characters, naive or out-of-range times and OPTIONS with a 4xx (or 2xx) and the
usual error body. Run on SQLite and PostgreSQL: PostgreSQL is the store that refuses NUL and
over-long values."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from app.bootstrap import Container
from app.models import DeadLetter
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT, frontend
from tests.http.conftest import bearer
from tests.http.test_events_api import ch_rows

ERROR_KEYS = {"status_code", "detail", "extra"}


def sent(user: str = "u-1", message_id: Any = "m-1", **extra: Any) -> dict[str, Any]:
    return frontend("message_sent", user, **{"text": "hello", "message_id": message_id, "room": "r-1", **extra})


def post_raw(client: TestClient[Any], keys: dict[str, str], body: bytes | str) -> Any:
    return client.post("/v1/events", content=body.encode() if isinstance(body, str) else body,
                       headers={**bearer(keys["webhook_token"]), "Content-Type": "application/json"})


def dead_letter_indexes(container: Container) -> list[int | None]:
    with container.uow() as uow:
        return sorted(uow.session.scalars(select(DeadLetter.batch_index)), key=lambda i: -1 if i is None else i)


BAD_ENVELOPES: dict[str, tuple[dict[str, Any], str]] = {
    "nul in text": (sent(message_id="m-nul", text="a\x00b"), "`value.text` contains a NUL character"),
    "nul in user id": (sent(user="u\x00"), "`value.user_id` contains a NUL character"),
    "nul in a key": (sent(**{"x\x00": 1}), "a key in `value` contains a NUL character"),
    "room id past its column": (sent(message_id="m-long", room_id="r" * 201), "`value.room_id` must be a string"),
    "message id past its column": (sent(message_id="m" * 201), "`value.message_id` must be a string"),
    "message id not an id": (sent(message_id={"a": 1}), "`value.message_id` must be a string"),
    "report type past its column": (
        frontend("report_sent", "u-1", message_id="m-1", reportType="x" * 101), "`value.reportType` must be"),
    "user reference not an id": (sent(replyedUserId={"id": "u-2"}), "`value.replyedUserId` names users"),
    "user id list with a long id": (sent(mentioned_user_ids=["u-2", "u" * 201]), "`value.mentioned_user_ids`"),
    "nested too deeply": (sent(nested=json.loads("[" * 40 + "]" * 40)), "`value.nested…` nests deeper than 32"),
    "envelope too large": (sent(blob="x" * 70_000), "an envelope may hold at most 65536 characters"),
    "year 9999": (sent(created_at="9999-12-31T23:59:59Z"), "more than a day in the future"),
    "older than the cap": (sent(created_at="2020-01-01T00:00:00Z"), "older than the retention cap (13 months)"),
    "time out of range": (sent(created_at="0001-01-01T00:00:00+14:00"), "`value.created_at` is out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENVELOPES))
def test_a_bad_envelope_is_refused_alone_and_the_rest_of_its_batch_is_stored(
    client: TestClient[Any], keys: dict[str, str], container: Container, case: str
) -> None:
    bad, detail = BAD_ENVELOPES[case]
    batch = [sent(message_id="m-good-1"), bad, sent(message_id="m-good-2")]
    response = client.post("/v1/events", json=batch, headers=bearer(keys["webhook_token"]))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert [r["index"] for r in body["rejected"]] == [1]
    assert detail in body["rejected"][0]["detail"]
    assert "\x00" not in body["rejected"][0]["detail"]
    assert {r["message_id"] for r in ch_rows(container)} == {"m-good-1", "m-good-2"}
    assert dead_letter_indexes(container) == [1]
    for message_id in ("m-good-1", "m-good-2"):
        assert client.get(f"/v1/messages/{message_id}", headers=bearer(keys["api_key"])).status_code == 200


def test_a_lone_surrogate_is_refused_alone_and_kept_as_a_dead_letter(
    client: TestClient[Any], keys: dict[str, str], container: Container
) -> None:
    good = json.dumps(sent(message_id="m-good"))
    bad = json.dumps(sent(message_id="m-bad")).replace('"hello"', '"\\ud800"')
    response = post_raw(client, keys, f"[{bad}, {good}]")
    assert response.status_code == 202, response.text
    assert response.json()["rejected"] == [
        {"index": 0, "detail": "`value.text` is not valid Unicode (it holds a lone surrogate)"}]
    assert [r["message_id"] for r in ch_rows(container)] == ["m-good"]
    rejected = client.get("/v1/events/rejected", headers=bearer(keys["api_key"])).json()["items"]
    assert len(rejected) == 1 and "\\ud800" in rejected[0]["body"]


def test_a_lone_high_surrogate_in_an_api_body_is_named_not_called_truncated(
    client: TestClient[Any], keys: dict[str, str]
) -> None:
    answer = client.post("/v1/deletion-requests", content=b'{"user_id": "\\ud800"}',
                         headers={**bearer(keys["api_key"]), "Content-Type": "application/json"})
    assert answer.status_code == 400 and set(answer.json()) == ERROR_KEYS
    assert "high surrogate" in answer.json()["detail"] and "not valid JSON" in answer.json()["detail"]


@pytest.mark.parametrize(("body", "detail"), [
    ("[" * 5000 + "]" * 5000, "the body nests too deeply to be read"),
    (b'{"event": "x", "value": {"project": "partner-prod", "user_id": "\xff\xfe"}}',
     "the body is not valid JSON (UTF-8)"),
    ("[]", "the array is empty"),
])
def test_a_body_that_cannot_be_read_is_a_400_and_a_dead_letter(
    client: TestClient[Any], keys: dict[str, str], container: Container, body: str | bytes, detail: str
) -> None:
    response = post_raw(client, keys, body)
    assert response.status_code == 400, response.text
    assert response.json()["rejected"] == [{"index": 0, "detail": detail}]
    assert dead_letter_indexes(container) == [None]


def test_an_event_dated_a_little_ahead_is_accepted(client: TestClient[Any], keys: dict[str, str],
                                                   clock: FakeClock) -> None:
    ahead = (clock.now + timedelta(hours=23)).isoformat()
    response = client.post("/v1/events", json=sent(created_at=ahead), headers=bearer(keys["webhook_token"]))
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}


def test_a_repeated_event_is_counted_as_a_duplicate(client: TestClient[Any], keys: dict[str, str]) -> None:
    first = client.post("/v1/events", json=sent(), headers=bearer(keys["webhook_token"]))
    again = client.post("/v1/events", json=[sent(), sent(message_id="m-2")], headers=bearer(keys["webhook_token"]))
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "suppressed": 0}
    assert again.json() == {"accepted": 2, "duplicates": 1, "rejected": [], "suppressed": 0}


@pytest.mark.parametrize(("body", "field"), [
    (b'{"user_id": "\xff"}', "the body is not valid UTF-8"),
    ("[" * 5000 + "]" * 5000, "invalid request"),
    ('{"user_id": "a\\u0000"}', "user_id"),
    ('{"user_id": "a", "reason": "x\\u0000"}', "reason"),
    ('{"user_id": "\\ud800"}', "invalid request"),
    ('{"user_id": "' + "a" * 201 + '"}', "user_id"),
])
def test_deletion_request_bodies_that_cannot_be_stored_are_400(
    client: TestClient[Any], keys: dict[str, str], body: str | bytes, field: str
) -> None:
    response = client.post("/v1/deletion-requests", content=body.encode() if isinstance(body, str) else body,
                           headers={**bearer(keys["api_key"]), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()) == ERROR_KEYS and field in response.json()["detail"]


@pytest.mark.parametrize(("who", "path", "detail"), [
    ("officer", "/v1/audit?since=2026-01-01T00:00:00", "since: give a time zone"),
    ("officer", "/v1/audit?until=0001-01-01T00:00:00%2B14:00", "until: out of range"),
    ("officer", "/v1/audit?since=99999-01-01T00:00:00Z", "since"),
    ("officer", "/v1/audit/export?since=2026-01-01T00:00:00", "since: give a time zone"),
    ("officer", "/v1/audit/export?format=xml", "format"),
    ("officer", "/v1/audit?user_id=%00", "the query string contains a NUL character"),
    ("officer", "/v1/audit?user_id=%ED%A0%80", "the query string is not valid UTF-8"),
    ("officer", "/v1/subjects/a%00b", "the path contains a NUL character"),
    ("officer", "/v1/subjects/%FF", "the path is not valid UTF-8"),
    ("api_key", "/v1/subjects/%00/export", "the path contains a NUL character"),
    ("api_key", "/v1/deletion-requests?user_id=%00", "the query string contains a NUL character"),
    ("api_key", "/v1/deletion-requests/%00", "the path contains a NUL character"),
    ("api_key", "/v1/messages/%00", "the path contains a NUL character"),
    ("api_key", "/v1/deletion-requests?cursor=%2A%2A", "cursor"),
    ("api_key", "/v1/deletion-requests?user_id=never-seen&cursor=%2A%2A", "cursor"),
    # well-formed cursors holding the wrong kind of value (not a time, not a number)
    ("api_key", "/v1/deletion-requests?cursor=WyJub3QgYSB0aW1lIiwgIngiXQ", "cursor"),
    ("api_key", "/v1/events/rejected?cursor=WyJub3QgYSB0aW1lIiwgIngiXQ", "cursor"),
    ("api_key", "/v1/callback/deliveries?cursor=WyJub3QgYSB0aW1lIiwgIngiXQ", "cursor"),
    ("officer", "/v1/holds?cursor=WyJub3QgYSB0aW1lIiwgIngiXQ", "cursor"),
    ("officer", "/v1/audit?cursor=WyJ4Il0", "cursor"),
    # a number cursor holding null or a list (int() of those is a TypeError, not a ValueError)
    ("officer", "/v1/audit?cursor=W251bGxd", "cursor"),
    ("officer", "/v1/audit/checkpoints?cursor=W1sxXV0", "cursor"),
    # a time without a zone (Lethe compares UTC-aware times only), an id that is not a string,
    # and sequence numbers out of the database's range or not whole
    ("api_key", "/v1/deletion-requests?cursor=WyIyMDI2LTEyLTA3VDEzOjQ5OjIyIiwgIngiXQ", "cursor"),
    ("api_key", "/v1/events/rejected?cursor=WyIyMDI2LTEyLTA3VDEzOjQ5OjIyIiwgIngiXQ", "cursor"),
    ("officer", "/v1/officer/deletion-requests?cursor=WyIyMDI2LTEyLTA3VDEzOjQ5OjIyIiwgIngiXQ", "cursor"),
    ("officer", "/v1/holds?cursor=WyIyMDI2LTEyLTA3VDEzOjQ5OjIyKzAwOjAwIiwgNV0", "cursor"),
    ("officer", "/v1/audit?cursor=WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDBd", "cursor"),
    ("officer", "/v1/audit?cursor=WzEuNV0", "cursor"),
    ("officer", "/v1/audit/checkpoints?cursor=Wy0xXQ", "cursor"),
])
def test_query_and_path_values_that_cannot_be_used_are_400(
    client: TestClient[Any], keys: dict[str, str], who: str, path: str, detail: str
) -> None:
    response = client.get(path, headers=bearer(keys[who]))
    assert response.status_code == 400, response.text
    assert set(response.json()) == ERROR_KEYS and detail in response.json()["detail"]


@pytest.mark.parametrize(("hold", "detail"), [
    ({"expires_at": "2027-01-01T00:00:00"}, "expires_at: give a time zone"),
    ({"expires_at": "0001-01-01T00:00:00+14:00"}, "expires_at: out of range"),
    ({"expires_at": "99999-01-01T00:00:00Z"}, "expires_at"),
    ({"target": "u\x00"}, "target"),
    ({"target": "u" * 201}, "target"),
    ({"reason": "r\x00"}, "reason"),
    ({"reference": "x" * 201}, "reference"),
])
def test_hold_fields_that_cannot_be_stored_are_400(client: TestClient[Any], keys: dict[str, str],
                                                   hold: dict[str, Any], detail: str) -> None:
    body = {"scope": "user", "target": "u", "reason": "inquiry", **hold}
    response = client.post("/v1/holds", json=body, headers=bearer(keys["officer"]))
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/rejected", "/v1/deletion-requests",
                                  "/v1/deletion-requests/x", "/v1/deletion-requests/x/restore", "/v1/holds",
                                  "/v1/holds/x", "/v1/audit", "/v1/audit/verify", "/v1/audit/export",
                                  "/v1/messages/x", "/v1/messages/x/complaints/resolve", "/v1/subjects/x",
                                  "/v1/subjects/x/export"])
def test_options_and_preflight_need_no_token(client: TestClient[Any], path: str) -> None:
    preflight = client.options(path, headers={"Origin": "https://console.example",
                                              "Access-Control-Request-Method": "POST"})
    assert preflight.status_code in (200, 204), preflight.text
    assert set(preflight.headers["allow"].split(", ")) & {"GET", "POST", "DELETE"}


def test_every_error_has_the_same_body(client: TestClient[Any], keys: dict[str, str]) -> None:
    no_token = client.get("/v1/deletion-requests")
    wrong_role = client.get("/v1/deletion-requests", headers=bearer(keys["webhook_token"]))
    malformed = client.post("/v1/deletion-requests", content=b"{", headers=bearer(keys["api_key"]))
    too_large = client.post("/v1/events", content=b" " * (11 * 1024 * 1024), headers=bearer(keys["webhook_token"]))
    wrong_method = client.put("/v1/holds", headers=bearer(keys["officer"]))
    for response, status in ((no_token, 401), (wrong_role, 403), (malformed, 400), (too_large, 413),
                             (wrong_method, 405)):
        assert response.status_code == status, response.text
        assert set(response.json()) == ERROR_KEYS and response.json()["detail"], response.text
    assert "allow" in wrong_method.headers


def test_a_refused_value_names_its_field_but_never_its_content(client: TestClient[Any],
                                                                keys: dict[str, str]) -> None:
    secret = "passport-4711"
    bad = sent(nested={"deep": {"deeper": {secret: "a\x00"}}})
    response = client.post("/v1/events", json=bad, headers=bearer(keys["webhook_token"]))
    assert response.status_code == 400
    assert secret not in response.text and "value.nested…" in response.text


def test_the_project_in_the_body_must_be_the_tokens(client: TestClient[Any], keys: dict[str, str]) -> None:
    other = sent()
    other["value"]["project"] = "someone-else"
    response = client.post("/v1/events", json=[sent(message_id="m-ok"), other],
                           headers=bearer(keys["webhook_token"]))
    assert response.status_code == 202
    assert response.json()["rejected"][0]["index"] == 1
    assert PROJECT in response.json()["rejected"][0]["detail"] or "project" in response.json()["rejected"][0]["detail"]
