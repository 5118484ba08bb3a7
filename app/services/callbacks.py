"""Completion callbacks (issue 12, CONTRACT "Callbacks"): each transition of a deletion request
is POSTed to its project's callback URL, signed with the Standard Webhooks scheme.

- `record` runs inside the transaction of the transition itself (the outbox): a transition
  that commits has its delivery, one that rolls back has none.
- `deliver` (job `callbacks`, every few seconds) leases due deliveries, POSTs them and marks
  them delivered afterwards: at least once, with the delivery's id as the stable `webhook-id`
  (a crash between the POST and the mark sends it again, under the same id). A failure is
  retried with exponential backoff and jitter; after 3 days the delivery is dead: kept, visible
  to the partner (`GET /v1/callback/deliveries?state=dead`) and counted in /metrics.
- Nothing personal is stored beyond what the callback carries: the payload is the request as
  it was at the transition without its user id; the user id is sealed under a key of the
  delivery's own, destroyed with it (delivered: the row is deleted; dead: the key is).
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from app.domain import webhooks as hooks
from app.domain.audit import AuditRecord
from app.domain.ids import new_id
from app.domain.policy import Handles
from app.domain.statuses import ProjectStatus
from app.models import CallbackDelivery, DeletionRequest
from app.ports import Clock, UnitOfWork, UnitOfWorkFactory
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.keys import CALLBACK, KeyService, unsealed
from app.services.summary import JobSummary
from app.services.views import CallbackOut, DeletionRequestOut, DeliveryOut, DeliveryPage, iso, without_user

log = structlog.get_logger(__name__)
NOTIFIED = frozenset({"in_grace", "on_hold", "completed", "restored", "failed"})  # CONTRACT "Callbacks"
GIVE_UP_AFTER = timedelta(days=3)
FIRST_RETRY = timedelta(seconds=10)
LONGEST_WAIT = timedelta(hours=1)
LEASE = timedelta(seconds=60)  # a delivery being sent is not picked up by another run meanwhile
TIMEOUT_SECONDS = 10.0
BATCH = 200  # deliveries per run
_USER_AAD = b"callback_deliveries.user_id"


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from FIRST_RETRY, at most LONGEST_WAIT,
    with full jitter between half and all of it (many partners' retries do not line up)."""
    base = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LONGEST_WAIT)
    draw = rng.random() if rng is not None else random.random()  # noqa: S311 - jitter, not a secret
    return timedelta(seconds=base.total_seconds() * (0.5 + 0.5 * draw))


def check_url(url: str, *, allow_private: bool = False) -> str:
    """A callback URL as partners may register it: absolute http(s), ASCII, and (unless this
    deployment allows private networks) not naming a loopback, private, link-local or other
    non-public address, nor `localhost`: the service must not be made to POST into its own
    network (SSRF). A name that resolves to such an address is refused at delivery."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        url.encode("ascii")
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except (ValueError, UnicodeEncodeError):
        raise InvalidInput("url: not a valid URL (non-ASCII characters must be percent-encoded)") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput("url: an absolute http(s) URL is needed, e.g. https://partner.example/lethe")
    if len(url) > 2000:
        raise InvalidInput("url: at most 2000 characters")
    if not allow_private and (host == "localhost" or host.endswith(".localhost") or _non_public(host)):
        raise InvalidInput("url: a loopback, private or link-local address is not accepted: callbacks go to the "
                           "partner over the internet (an operator may allow private networks with "
                           "LETHE_CALLBACK_PRIVATE_NETWORKS=allow)")
    return url


def _non_public(address: str) -> bool:
    """Whether `address` is an IP literal outside the public internet (False for a name).
    The legacy IPv4 forms that resolvers and HTTP clients still accept count as literals:
    `127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1` all name 127.0.0.1 (`inet_aton`)."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(address))
        except (OSError, ValueError):
            return False  # a name: checked where it resolves (`pinned`)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return not ip.is_global or ip.is_multicast


def pinned(url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Resolve the URL's host once and check every address it has; returns the URL with the
    host replaced by the first address, the Host header and the TLS server name to send, so
    the connection goes to the address that was checked (a DNS answer that changes between
    the check and the connection cannot redirect it). Raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if _non_public(host):
        raise ValueError("the callback URL names a non-public address")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ValueError("the callback host does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses or any(_non_public(a) for a in addresses):
        raise ValueError("the callback host resolves to a non-public address")
    target = httpx.URL(url).copy_with(host=addresses[0])
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return str(target), {"host": netloc}, {"sni_hostname": host} if parts.scheme == "https" else {}


class CallbackService:
    handles: Handles = frozenset({("sql.callback_deliveries", "user_id", "key_destroyed_when_delivered")})

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, keys: KeyService, secret_key: bytes,
                 client: httpx.Client | None = None, *, private_networks: bool = False) -> None:
        self._private_networks = private_networks  # LETHE_CALLBACK_PRIVATE_NETWORKS=allow
        self._uow = uow
        self._clock = clock
        self._keys = keys
        self._secret = secret_key
        self._client = client

    # --- partners -----------------------------------------------------------------------
    def register(self, project_id: str | None, url: str, *, actor: str, name: str | None = None) -> CallbackOut:
        """Set the project's callback URL (by id, or by `name`) and a new signing secret,
        shown this once. Registering again replaces both."""
        check_url(url, allow_private=self._private_networks)
        secret = hooks.new_signing_secret()
        with self._uow() as uow:
            project = uow.projects.by_id(project_id) if project_id else uow.projects.by_name(name or "")
            if project is None:
                raise NotFound(f"project {name or project_id} not found")
            if project.status != ProjectStatus.ACTIVE:  # its partner is gone: nothing to call back
                raise Conflict(f"project {project.name!r} is {project.status}: it takes no callback URL")
            project.callback_url = url
            project.callback_secret = hooks.seal_secret(self._secret, project.id, secret)
            uow.audit(AuditRecord(actor, "project.callback_registered", project.name, None,
                                  {"host": urlsplit(url).hostname}))
            uow.commit()
        return CallbackOut(url, secret)

    def page(self, project_id: str, *, state: str | None, limit: int, cursor: str | None) -> DeliveryPage:
        """The project's deliveries not yet delivered (pending or dead), newest first."""
        if state not in (None, "pending", "dead"):
            raise InvalidInput("state: pending or dead")
        with self._uow() as uow:
            rows, next_cursor = uow.callbacks.page(project_id, dead=None if state is None else state == "dead",
                                                   limit=limit, cursor=cursor)
            items = [DeliveryOut(id=r.id, request=r.request_id, type=f"deletion_request.{r.status}",
                                 state="dead" if r.dead_at else "pending", attempts=r.attempts,
                                 created_at=r.created_at.isoformat(), next_attempt_at=r.next_attempt_at.isoformat(),
                                 last_error=r.last_error, dead_at=iso(r.dead_at))
                     for r in rows]
        return DeliveryPage(items, next_cursor)

    # --- the outbox ---------------------------------------------------------------------
    def record(self, uow: UnitOfWork, rows: Sequence[DeletionRequest],
               users_of: Callable[[Sequence[str]], Mapping[str, str]],
               render: Callable[[DeletionRequest, str], DeletionRequestOut]) -> int:
        """In the transition's own transaction: a delivery for each row (in a notified status)
        whose project has a callback URL. `users_of(subject ids)`: their user ids (asked only
        when there is something to send; read before any link went); `render(row, project
        name)`: the request as the API shows it."""
        due = [r for r in rows if r.status in NOTIFIED]
        if not due:
            return 0
        projects = {p: uow.projects.by_id(p) for p in {r.project_id for r in due}}
        due = [r for r in due if (p := projects[r.project_id]) is not None and p.callback_url]
        if not due:
            return 0
        now = self._clock()
        users = users_of([r.subject_id for r in due])
        ids = {r.id: new_id() for r in due}
        ciphers = self._keys.ciphers(uow, list(ids.values()), CALLBACK, create=True)
        for row in due:
            project = projects[row.project_id]
            assert project is not None
            user = users.get(row.subject_id)
            payload = without_user(render(row, project.name))
            uow.callbacks.add(CallbackDelivery(
                id=ids[row.id], project_id=row.project_id, request_id=row.id, status=row.status, payload=payload,
                user_id=ciphers[ids[row.id]].encrypt(user, _USER_AAD) if user else None, created_at=now,
                attempts=0, next_attempt_at=now))
        return len(due)

    def deliver(self, now: datetime | None = None) -> JobSummary:
        """Send what is due (job `callbacks`)."""
        now = now or self._clock()
        summary = JobSummary("callbacks", now)
        with self._uow() as uow:
            leased = uow.callbacks.lease_due(now, now + LEASE, BATCH)
            work = [(d.id, d.project_id, d.status, d.payload, d.user_id, d.created_at, d.attempts) for d in leased]
            projects = {p: uow.projects.by_id(p) for p in {w[1] for w in work}}
            keys = self._keys.ciphers(uow, [w[0] for w in work], CALLBACK, create=False)
            uow.commit()
        results: list[tuple[str, str | None]] = []
        client = self._client or httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        try:
            self._send_all(client, work, projects, keys, results)
        finally:
            if client is not self._client:
                client.close()
        self._settle(work, results, summary)
        return summary

    def _send_all(self, client: httpx.Client, work: Sequence[tuple[Any, ...]], projects: Mapping[str, Any],
                  keys: Mapping[str, Any], results: list[tuple[str, str | None]]) -> None:
        for delivery_id, project_id, status, payload, sealed_user, _created, _attempts in work:
            project = projects[project_id]
            if project is None or not project.callback_url or not project.callback_secret:
                results.append((delivery_id, "the project has no callback URL any more"))
                continue
            body = json.dumps({"type": f"deletion_request.{status}", "request": {
                **payload, "user_id": unsealed(keys.get(delivery_id), sealed_user, _USER_AAD.decode())}},
                separators=(",", ":")).encode()
            key = hooks.signing_key(hooks.open_secret(self._secret, project.id, project.callback_secret))
            results.append((delivery_id, self._post(client, project.callback_url, delivery_id, key, body)))

    def _post(self, client: httpx.Client, url: str, delivery_id: str, key: bytes, body: bytes) -> str | None:
        """None when the receiver took it (2xx), else a short reason (no body, no secret)."""
        stamp = int(self._clock().timestamp())
        headers = {"content-type": "application/json", "webhook-id": delivery_id,
                   "webhook-timestamp": str(stamp), "webhook-signature": hooks.sign(key, delivery_id, stamp, body),
                   "user-agent": "Lethe-Callbacks/1"}
        extensions: dict[str, Any] = {}
        if not self._private_networks:
            try:
                url, host, extensions = pinned(url)
            except ValueError as exc:
                return str(exc)
            headers.update(host)
        try:
            response = client.post(url, content=body, headers=headers, extensions=extensions)
        except httpx.TimeoutException:
            return "timeout"
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            return type(exc).__name__
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _settle(self, work: Sequence[tuple[Any, ...]], results: Sequence[tuple[str, str | None]],
                summary: JobSummary) -> None:
        now = self._clock()
        started = {w[0]: (w[5], w[6]) for w in work}
        with self._uow() as uow:
            done = [d for d, error in results if error is None]
            dead: list[str] = []
            for delivery_id, error in results:
                if error is None:
                    continue
                created, attempts = started[delivery_id]
                if now - created >= GIVE_UP_AFTER:
                    dead.append(delivery_id)
                    uow.callbacks.fail(delivery_id, error, now, dead=True, next_attempt=now)
                else:
                    uow.callbacks.fail(delivery_id, error, now, dead=False,
                                       next_attempt=now + backoff(attempts + 1))
            uow.callbacks.delete(done)
            self._keys.destroy(uow, done + dead, CALLBACK)  # the sealed user ids go with them
            if done or dead:
                uow.audit(AuditRecord("job:callbacks", "callbacks.settled", None, None,
                                      {"delivered": len(done), "dead": len(dead)}))
            uow.commit()
        summary.processed, summary.failed = len(done), len(dead)
        summary.stores["callbacks.retrying"] = len(results) - len(done) - len(dead)
