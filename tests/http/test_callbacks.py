"""Completion callbacks (issue 12, CONTRACT "Callbacks"), received by a real local HTTP server:
signed transitions, at least once with a stable webhook-id across a sender crash, retried with
backoff, dead after 3 days and visible; nothing personal kept once delivered."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from app.bootstrap import Container
from app.config import Settings
from app.domain import webhooks as hooks
from app.models import CallbackDelivery
from app.services.callbacks import CallbackService, pinned
from app.services.errors import InvalidInput
from tests.conftest import FakeClock
from tests.fixtures.platform import PROJECT
from tests.http.conftest import bearer

USER = "cb/user+1=="


class Receiver:
    """A partner's endpoint: records every POST; answers with the next planned status (200 after)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.plan: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.plan.pop(0) if receiver.plan else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/lethe/callbacks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receiver listens on 127.0.0.1: this deployment lets callbacks reach private networks
    (LETHE_CALLBACK_PRIVATE_NETWORKS=allow). The default, deny, is tested at the end."""
    return replace(settings, callback_private_networks=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def register(client: TestClient[Any], keys: dict[str, str], url: str) -> str:
    answer = client.put("/v1/callback", json={"url": url}, headers=bearer(keys["api_key"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["url"] == url
    return str(answer.json()["callback_secret"])


def outbox(container: Container) -> int:
    with container.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(CallbackDelivery)) or 0)


def test_each_transition_is_posted_signed_with_the_user_id(client: TestClient[Any], keys: dict[str, str],
                                                           container: Container, clock: FakeClock,
                                                           receiver: Receiver) -> None:
    secret = register(client, keys, receiver.url)
    created = client.post("/v1/deletion-requests", json={"user_id": USER, "reason": "asked"},
                          headers=bearer(keys["api_key"])).json()
    container.erasure.anonymise(clock.now)
    clock.advance(seconds=1)  # deliveries go out in the order of their transitions
    client.post(f"/v1/deletion-requests/{created['id']}/restore", headers=bearer(keys["api_key"]))
    assert outbox(container) == 2  # in the transitions' own transactions
    summary = container.callbacks.deliver(clock.now)
    assert summary.processed == 2 and outbox(container) == 0
    events = receiver.events()
    assert [e["type"] for e in events] == ["deletion_request.in_grace", "deletion_request.restored"]
    assert all(e["request"]["id"] == created["id"] and e["request"]["user_id"] == USER for e in events)
    assert events[0]["request"]["status"] == "in_grace" and "reason" not in events[0]["request"]
    key = hooks.SigningKey(hooks.signing_key(secret))
    for headers, body in receiver.received:  # verifiable exactly as the README shows partners
        hooks.verify(hooks.parse_headers(headers), body, [key], clock.now)
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 2
    with container.uow() as uow:  # delivered: the sealed user ids' keys are gone with the rows
        assert uow.keys.having([h["webhook-id"] for h, _ in receiver.received], "callback") == set()


def test_an_immediate_erasure_reports_completed_with_the_id_the_partner_sent(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
        receiver: Receiver) -> None:
    register(client, keys, receiver.url)
    client.post("/v1/deletion-requests", json={"user_id": USER, "mode": "immediate"}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)  # the link is destroyed in this very transaction
    container.callbacks.deliver(clock.now)
    (event,) = receiver.events()
    assert event["type"] == "deletion_request.completed" and event["request"]["user_id"] == USER


def test_a_sender_killed_after_the_post_sends_it_again_under_the_same_id(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
        receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    register(client, keys, receiver.url)
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)

    def killed(*_args: Any) -> None:
        raise SystemExit("killed between the POST and marking it delivered")

    with monkeypatch.context() as patch:
        patch.setattr(container.callbacks, "_settle", killed)
        with pytest.raises(SystemExit):
            container.callbacks.deliver(clock.now)
    assert len(receiver.received) == 1 and outbox(container) == 1  # sent, not yet marked: not lost
    assert container.callbacks.deliver(clock.now).processed == 0  # leased by the dead run for a minute
    clock.advance(seconds=61)
    assert container.callbacks.deliver(clock.now).processed == 1
    ids = [h["webhook-id"] for h, _ in receiver.received]
    assert len(ids) == 2 and ids[0] == ids[1]  # at least once, one stable id: the receiver dedups
    assert container.callbacks.deliver(clock.now + timedelta(hours=1)).processed == 0 and len(receiver.received) == 2


def test_failures_back_off_then_the_delivery_is_dead_and_visible(client: TestClient[Any], keys: dict[str, str],
                                                                 container: Container, clock: FakeClock,
                                                                 receiver: Receiver) -> None:
    register(client, keys, receiver.url)
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    receiver.plan = [503] * 1000
    waits = []
    for _ in range(5):
        container.callbacks.deliver(clock.now)
        with container.uow() as uow:
            row = uow.session.scalars(select(CallbackDelivery)).one()
            waits.append((row.next_attempt_at - clock.now).total_seconds())
            assert row.last_error == "HTTP 503"
        clock.advance(seconds=waits[-1] + 1)
    assert all(later > earlier for earlier, later in itertools.pairwise(waits))  # exponential
    assert 5 <= waits[0] <= 10
    clock.advance(days=3)
    summary = container.callbacks.deliver(clock.now)
    assert summary.failed == 1
    dead = client.get("/v1/callback/deliveries", params={"state": "dead"}, headers=bearer(keys["api_key"])).json()
    assert [d["type"] for d in dead["items"]] == ["deletion_request.in_grace"] and dead["items"][0]["attempts"] == 6
    assert USER not in json.dumps(dead)
    with container.uow() as uow:  # dead: the sealed user id can no longer be opened
        assert uow.keys.having([dead["items"][0]["id"]], "callback") == set()
    metrics = client.get("/metrics").text
    assert "lethe_callbacks_dead 1.0" in metrics
    clock.advance(days=1)
    assert container.callbacks.deliver(clock.now).processed == 0  # never retried again


def test_without_a_callback_url_nothing_is_queued_and_bad_urls_are_refused(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock) -> None:
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    assert outbox(container) == 0
    for url in ("ftp://x", "not a url", "https://", "https://E\U000f3db6]", "https://bad]host/"):
        answer = client.put("/v1/callback", json={"url": url}, headers=bearer(keys["api_key"]))
        assert answer.status_code == 400 and "url" in answer.text
    assert client.put("/v1/callback", json={"url": "https://x.example"},
                      headers=bearer(keys["officer"])).status_code == 403


# --- the default deployment: callbacks never reach the service's own network (SSRF) ---------
PRIVATE = ["http://127.0.0.1:8000/x", "http://localhost/x", "https://api.localhost/x", "http://10.1.2.3/x",
           "http://192.168.0.10/x", "http://172.16.5.5/x", "http://169.254.169.254/latest/meta-data/",
           "http://[::1]:8080/x", "http://[::ffff:127.0.0.1]/x", "http://[fe80::1]/x", "http://[fd00::1]/x",
           "http://0.0.0.0/x", "http://100.64.0.1/x", "http://224.0.0.1/x",
           # the legacy IPv4 forms HTTP clients still resolve: all of them 127.0.0.1 or 10.0.0.1
           "http://127.1/x", "http://0x7f000001/x", "http://2130706433/x", "http://0177.0.0.1/x", "http://10.1/x",
           "http://0x7f.0.0.1/x"]


def strict(container: Container) -> CallbackService:
    """The container's callbacks as the default configuration builds them (private networks denied)."""
    return CallbackService(container.uow, container.now, container.keys, container.settings.secret_key)


def test_by_default_a_callback_url_on_a_private_network_is_refused(container: Container,
                                                                   keys: dict[str, str]) -> None:
    for url in PRIVATE:
        with pytest.raises(InvalidInput, match="loopback, private or link-local"):
            strict(container).register(None, url, actor="partner:acme", name=PROJECT)
    assert strict(container).register(None, "https://93.184.216.34/hook", actor="partner:acme", name=PROJECT).url


def owed_to_partner_example(client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
                            receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> int:
    """A transition owed to http://partner.example:<port>/..., a name this test's DNS answers
    with 127.0.0.1 (the receiver's address); returns the port."""
    port = int(receiver.server.server_address[1])
    register(client, keys, f"http://partner.example:{port}/lethe/callbacks")
    client.post("/v1/deletion-requests", json={"user_id": USER}, headers=bearer(keys["api_key"]))
    container.erasure.anonymise(clock.now)
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1" if host == "partner.example"
                                                                           else host, *a, **k))
    return port


def test_by_default_a_host_that_resolves_to_a_private_address_gets_nothing(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
        receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A public-looking name whose DNS answer is the service's own network (or changes to it
    after registration: DNS rebinding) is checked at each delivery, not only when registered:
    nothing is posted, the delivery stays pending with the reason, and is retried."""
    owed_to_partner_example(client, keys, container, clock, receiver, monkeypatch)
    summary = strict(container).deliver(clock.now)
    assert summary.processed == 0 and receiver.received == []
    pending = client.get("/v1/callback/deliveries", params={"state": "pending"},
                         headers=bearer(keys["api_key"])).json()["items"]
    assert [d["last_error"] for d in pending] == ["the callback host resolves to a non-public address"] * len(pending)
    assert pending  # the transitions are still owed to the partner


def test_a_delivery_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host is resolved once; the connection goes to that address, with the partner's
    host name in the Host header and as the TLS server name (its certificate is checked
    against the name)."""
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", port, 0, 0))])
    url, headers, extensions = pinned("https://hooks.partner.example:8443/lethe?x=1")
    assert url == "https://93.184.216.34:8443/lethe?x=1"
    assert (headers, extensions) == ({"host": "hooks.partner.example:8443"}, {"sni_hostname": "hooks.partner.example"})
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))])
    with pytest.raises(ValueError, match="non-public"):
        pinned("http://hooks.partner.example/lethe")  # one private answer among public ones is enough


def test_a_pinned_delivery_reaches_the_receiver_under_the_partners_host_name(
        client: TestClient[Any], keys: dict[str, str], container: Container, clock: FakeClock,
        receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through httpx: the POST goes to the checked address and carries the host name
    (here 127.0.0.1 stands in for a public address)."""
    import app.services.callbacks as callbacks

    port = owed_to_partner_example(client, keys, container, clock, receiver, monkeypatch)
    monkeypatch.setattr(callbacks, "_non_public", lambda address: False)
    assert strict(container).deliver(clock.now).processed == 1
    assert [h["host"] for h, _ in receiver.received] == [f"partner.example:{port}"]
    assert receiver.events()[0]["request"]["user_id"] == USER


def test_an_offboarded_project_takes_no_callback_url(container: Container, keys: dict[str, str]) -> None:
    from app.services.errors import Conflict

    container.accounts.offboard_project(PROJECT)
    with pytest.raises(Conflict, match="is offboarding: it takes no callback URL"):
        strict(container).register(None, "https://93.184.216.34/hook", actor="operator:cli", name=PROJECT)
