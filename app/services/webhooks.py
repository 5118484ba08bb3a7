"""How the platform's webhooks authenticate (CONTRACT "Events webhook"): a Standard Webhooks
signature, a bearer `webhook_token`, or the project's secret URL; each project chooses which.

What a verification needs about a project (its opened signing keys, accepted methods) is
remembered for at most CACHE_SECONDS, like the bearer-token cache: a rotation, a change of
methods or an offboarding reaches every process within that time (this one at once). Signing
secrets are opened only here and never logged; an expired predecessor stops verifying at the
instant its overlap ends, whatever the cache holds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import structlog

from app.domain import webhooks as hooks
from app.domain.audit import AuditRecord
from app.domain.crypto import Undecryptable
from app.domain.statuses import ProjectStatus
from app.models import Project
from app.ports import Clock, UnitOfWorkFactory
from app.services.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from app.services.operator_views import SigningSecretRotated, WebhookAuthOut, WebhookUrlRotated
from app.services.views import iso

log = structlog.get_logger(__name__)

CACHE_SECONDS = 5.0  # the same rule as AccountService's AUTH_CACHE_SECONDS
CACHE_SIZE = 10_000
Lookup = Literal["id", "name", "url"]


@dataclass(frozen=True, slots=True)
class HookProject:
    """A project as webhook authentication sees it."""

    project_id: str
    name: str
    methods: frozenset[str]
    keys: tuple[hooks.SigningKey, ...] = field(repr=False)
    url_valid_until: datetime | None = None  # found by a rotated URL secret: valid until then

    def require(self, method: str) -> None:
        """Forbidden unless the project accepts webhooks authenticated by `method`."""
        if method not in self.methods:
            accepted = ", ".join(m for m in hooks.METHODS if m in self.methods)
            raise Forbidden(f"project {self.name} does not accept webhooks by {method}; it accepts: {accepted} "
                            "(lethe project webhook-auth)")


class WebhookAuthService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, secret_key: bytes) -> None:
        self._uow = uow
        self._clock = clock
        self._secret = secret_key
        self._cache: dict[str, tuple[float, HookProject | None]] = {}

    # --- verification (every webhook call) ------------------------------------------------

    def verify_signed(self, headers: Mapping[str, str], body: bytes) -> tuple[HookProject, str]:
        """The project a Standard Webhooks delivery is signed for, and its webhook-id.
        Unauthenticated (401) says why not; Forbidden (403) when the project refuses signatures.
        The project is the one its envelopes name (`value.project`): the headers name none."""
        try:
            signed = hooks.parse_headers(headers)
        except hooks.WebhookAuthError as exc:
            raise Unauthenticated(str(exc)) from None
        now = self._clock()
        if problem := hooks.timestamp_problem(signed.timestamp, now):
            raise Unauthenticated(problem)
        name = hooks.claimed_project(body)
        if name is None:
            raise Unauthenticated("a signed delivery is matched to its project by value.project of its envelopes; "
                                  "this body names no single project")
        project = self.find("name", name)
        # an unknown project and a wrong signature read the same: the answer reveals no project
        if project is None or not hooks.signature_matches(signed, body, project.keys, now):
            raise Unauthenticated(hooks.NO_MATCH)
        project.require(hooks.SIGNED)
        return project, signed.id

    def by_url(self, url_secret: str) -> HookProject | None:
        """The project whose secret URL this is (its predecessor too, for 24 h after a rotation)."""
        found = self.find("url", hooks.hash_secret(url_secret))
        if found is None or (found.url_valid_until is not None and self._clock() >= found.url_valid_until):
            return None
        return found

    def cached_url(self, url_secret: str) -> tuple[bool, HookProject | None]:
        """`by_url` from the cache alone (no I/O, safe on the event loop): (hit, project)."""
        hit, found = self.cached("url", hooks.hash_secret(url_secret))
        if found is not None and found.url_valid_until is not None and self._clock() >= found.url_valid_until:
            return True, None
        return hit, found

    def find(self, kind: Lookup, value: str) -> HookProject | None:
        """An active project by id, name or URL-secret hash; remembered for CACHE_SECONDS."""
        hit, found = self.cached(kind, value)
        if hit:
            return found
        found = self._load(kind, value)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[f"{kind}:{value}"] = (time.monotonic() + CACHE_SECONDS, found)
        return found

    def cached(self, kind: Lookup, value: str) -> tuple[bool, HookProject | None]:
        entry = self._cache.get(f"{kind}:{value}")
        if entry is None or entry[0] <= time.monotonic():
            return False, None
        return True, entry[1]

    def forget(self) -> None:
        self._cache.clear()

    def _load(self, kind: Lookup, value: str) -> HookProject | None:
        with self._uow() as uow:
            if kind == "id":
                project = uow.projects.by_id(value)
            elif kind == "name":
                project = uow.projects.by_name(value)
            else:
                project = uow.projects.by_webhook_url(value)
            if project is None or project.status != ProjectStatus.ACTIVE:
                return None
            url_until = None
            if kind == "url" and project.webhook_url_hash != value:  # found by the rotated-out secret
                url_until = project.webhook_url_previous_until or datetime.min.replace(tzinfo=UTC)
            return HookProject(project.id, project.name, frozenset(hooks.parse_methods(project.webhook_auth)),
                               tuple(self._keys(project)), url_until)

    def _keys(self, project: Project) -> list[hooks.SigningKey]:
        opened: dict[str, bytes | None] = {}
        for slot, sealed in (("current", project.webhook_secret), ("previous", project.webhook_secret_previous)):
            opened[slot] = None
            if sealed:
                try:
                    opened[slot] = hooks.signing_key(hooks.open_secret(self._secret, project.id, sealed))
                except (Undecryptable, hooks.WebhookAuthError):
                    log.warning("webhooks.secret_unopenable", slot=slot,
                                hint="LETHE_SECRET_KEY is not the key that sealed it; rotate the webhook secret")
        return hooks.keys_at(opened["current"], opened["previous"], project.webhook_secret_previous_until,
                             self._clock())

    # --- operator commands ----------------------------------------------------------------

    def rotate_signing_secret(self, name: str, *, actor: str = "operator:cli") -> SigningSecretRotated:
        """A new signing secret (shown once); the one it replaces verifies for ROTATION_OVERLAP more."""
        secret = hooks.new_signing_secret()
        with self._uow() as uow:
            project = self._active(uow.projects.by_name(name), name)
            until = self._clock() + hooks.ROTATION_OVERLAP if project.webhook_secret else None
            project.webhook_secret_previous, project.webhook_secret_previous_until = project.webhook_secret, until
            project.webhook_secret = hooks.seal_secret(self._secret, project.id, secret)
            uow.audit(AuditRecord(actor, "project.webhook_secret_rotated", name, None,
                                  {"previous_valid_until": until.isoformat() if until else None}))
            uow.commit()
        self.forget()
        return SigningSecretRotated(project=name, webhook_secret=secret, previous_valid_until=iso(until))

    def rotate_url(self, name: str, *, actor: str = "operator:cli") -> WebhookUrlRotated:
        """A new secret URL (shown once); the one it replaces works for ROTATION_OVERLAP more."""
        url_secret = hooks.new_url_secret()
        with self._uow() as uow:
            project = self._active(uow.projects.by_name(name), name)
            until = self._clock() + hooks.ROTATION_OVERLAP if project.webhook_url_hash else None
            project.webhook_url_previous_hash, project.webhook_url_previous_until = project.webhook_url_hash, until
            project.webhook_url_hash = hooks.hash_secret(url_secret)
            uow.audit(AuditRecord(actor, "project.webhook_url_rotated", name, None,
                                  {"previous_valid_until": until.isoformat() if until else None}))
            uow.commit()
        self.forget()
        return WebhookUrlRotated(project=name, webhook_url_path=hooks.url_path(url_secret),
                                 previous_valid_until=iso(until))

    def set_methods(self, name: str, allow: str, *, actor: str = "operator:cli") -> WebhookAuthOut:
        """Which of signed, bearer, url the project accepts from now on (every process within CACHE_SECONDS)."""
        try:
            methods = hooks.format_methods(hooks.parse_methods(allow))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        with self._uow() as uow:
            project = self._active(uow.projects.by_name(name), name)
            project.webhook_auth = methods
            uow.audit(AuditRecord(actor, "project.webhook_auth_set", name, None, {"methods": methods.split(",")}))
            uow.commit()
        self.forget()
        return WebhookAuthOut(project=name, webhook_auth=methods.split(","))

    @staticmethod
    def _active(project: Project | None, name: str) -> Project:
        if project is None:
            raise NotFound(f"project {name!r} not found")
        if project.status != ProjectStatus.ACTIVE:
            raise Conflict(f"project {name!r} is {project.status}: its webhooks are closed")
        return project
