"""Projects, officers and the bearer tokens that act for them (stored hashed, shown once)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import IntegrityError

from app.domain import webhooks
from app.domain.audit import AuditRecord
from app.domain.ids import new_id
from app.domain.policy import Handles
from app.domain.statuses import ProjectStatus
from app.models import Officer, Project
from app.ports import Clock, UnitOfWorkFactory
from app.services.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from app.services.operator_views import (
    OfficerCreated,
    OfficerOut,
    OfficerRevoked,
    ProjectCreated,
    ProjectOut,
    ProjectStatusOut,
)
from app.services.views import iso


class Role(StrEnum):
    PARTNER = "partner"
    WEBHOOK = "webhook"
    OFFICER = "officer"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a role and the projects (id -> name) it may act on."""

    role: Role
    name: str
    projects: dict[str, str]

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"

    @property
    def project_id(self) -> str:
        """The single project of a partner key or webhook token."""
        (project_id,) = self.projects
        return project_id

    def scoped(self, project: str | None) -> dict[str, str]:
        """The projects (id -> name) a request means: all of the token's, or the one named
        (NotFound when the token does not cover it: never reveal that it exists)."""
        if project is None:
            return dict(self.projects)
        chosen = {pid: name for pid, name in self.projects.items() if name == project}
        if not chosen:
            raise NotFound(f"project {project} not found")
        return chosen

    def one(self, project: str | None) -> tuple[str, str]:
        """The one project (id, name) a change is made in: the one named, or the token's only
        project (InvalidInput when it covers several and none is named)."""
        if project is None and len(self.projects) != 1:
            raise InvalidInput("project: required, this token covers several projects")
        ((project_id, name),) = self.scoped(project).items()
        return project_id, name


def hash_token(token: str) -> str:
    """Tokens are 256-bit random, so a plain SHA-256 is a safe stored form."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


AUTH_CACHE_SECONDS = 5.0  # a revoked key stops working within this long in every process
AUTH_CACHE_SIZE = 10_000
MAX_NAME = 100  # a project's or an officer's: the widths of their columns (app.models.accounts)
MAX_REGION = 20


def _fits(what: str, value: str, most: int) -> None:
    if not value or len(value) > most:
        raise InvalidInput(f"{what} must be 1-{most} characters")


class AccountService:
    handles: Handles = frozenset({("sql.officers", "name", "manual")})  # staff: `lethe officer revoke`, by hand

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, secret_key: bytes) -> None:
        self._uow = uow
        self._clock = clock
        self._secret = secret_key  # seals the projects' webhook signing secrets
        self._also_forget: list[Callable[[], None]] = []
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def create_project(self, name: str, region: str = "eu", *, actor: str = "operator:cli") -> ProjectCreated:
        _fits("project name", name, MAX_NAME)
        _fits("region", region, MAX_REGION)
        api_key, webhook_token = _new_token("lth_key"), _new_token("lth_hook")
        webhook_secret, url_secret, project_id = webhooks.new_signing_secret(), webhooks.new_url_secret(), new_id()
        with self._uow() as uow:
            if uow.projects.by_name(name):
                raise AlreadyExists(f"project {name!r} already exists")
            uow.projects.add(Project(id=project_id, name=name, region=region, api_key_hash=hash_token(api_key),
                                     webhook_token_hash=hash_token(webhook_token),
                                     webhook_secret=webhooks.seal_secret(self._secret, project_id, webhook_secret),
                                     webhook_url_hash=webhooks.hash_secret(url_secret),
                                     created_at=self._clock()))
            uow.audit(AuditRecord(actor, "project.created", name, None, {"region": region}))
            try:
                uow.commit()
            except IntegrityError as exc:
                raise AlreadyExists(f"project {name!r} already exists") from exc
        return ProjectCreated(project=name, api_key=api_key, webhook_token=webhook_token,
                              webhook_secret=webhook_secret, webhook_url_path=webhooks.url_path(url_secret))

    def create_officer(self, name: str, project_names: list[str], *, actor: str = "operator:cli") -> OfficerCreated:
        _fits("officer name", name, MAX_NAME)
        if not project_names:
            raise InvalidInput("an officer needs at least one --project")
        token = _new_token("lth_off")
        with self._uow() as uow:
            projects = uow.projects.by_names(project_names)
            missing = sorted(set(project_names) - {p.name for p in projects})
            if missing:
                raise InvalidInput(f"no such project: {', '.join(missing)}")
            if uow.projects.officer_by_name(name):
                raise AlreadyExists(f"officer {name!r} already exists")
            uow.projects.add_officer(Officer(name=name, token_hash=hash_token(token), created_at=self._clock()),
                                     projects)
            for project in projects:
                uow.audit(AuditRecord(actor, "officer.created", project.name, None, {"officer": name}))
            try:
                uow.commit()
            except IntegrityError as exc:  # created meanwhile by a concurrent command
                raise AlreadyExists(f"officer {name!r} already exists") from exc
        return OfficerCreated(officer=name, token=token)

    def list_projects(self) -> list[ProjectOut]:
        with self._uow() as uow:
            return [ProjectOut(project=p.name, region=p.region, status=p.status, created_at=p.created_at.isoformat())
                    for p in uow.projects.all()]

    def list_officers(self) -> list[OfficerOut]:
        with self._uow() as uow:
            officers = uow.projects.officers()
            projects = uow.projects.officer_projects([o.id for o in officers])
            return [OfficerOut(officer=o.name, projects=[p.name for p in projects[o.id]],
                               created_at=o.created_at.isoformat(), revoked_at=iso(o.revoked_at)) for o in officers]

    def revoke_officer(self, name: str, *, actor: str = "operator:cli") -> OfficerRevoked:
        """The officer's token stops working: here at once, in every other process within
        AUTH_CACHE_SECONDS. Audited per project; the officer's record stays."""
        with self._uow() as uow:
            officer = uow.projects.officer_by_name(name)
            if officer is None:
                raise NotFound(f"officer {name!r} not found")
            if officer.revoked_at is None:
                officer.revoked_at = self._clock()
                for project in uow.projects.officer_projects([officer.id])[officer.id]:
                    uow.audit(AuditRecord(actor, "officer.revoked", project.name, None, {"officer": name}))
            revoked_at = officer.revoked_at
            uow.commit()
        self.forget()
        return OfficerRevoked(officer=name, revoked_at=revoked_at.isoformat())

    def offboard_project(self, name: str, *, actor: str = "operator:cli") -> ProjectStatusOut:
        """End the partnership: its keys stop working (here at once, elsewhere within
        AUTH_CACHE_SECONDS) and job `offboarding` deletes its data. SQL only."""
        with self._uow() as uow:
            project = uow.projects.by_name(name)
            if project is None:
                raise NotFound(f"no such project: {name}")
            if project.status != ProjectStatus.ACTIVE:
                raise Conflict(f"project {name} is already {project.status}")
            project.status, project.ended_at = ProjectStatus.OFFBOARDING.value, self._clock()
            uow.audit(AuditRecord(actor, "project.offboarded", name, None, {}))
            uow.commit()
        self.forget()
        return ProjectStatusOut(project=name, status=ProjectStatus.OFFBOARDING.value)

    def authenticate(self, token: str) -> Principal | None:
        """The token's principal, remembered for a few seconds: every API call authenticates,
        and a database round trip per call would dominate the cost of the small ones."""
        return self.by_token_hash(hash_token(token))

    def by_token_hash(self, digest: str) -> Principal | None:
        """`authenticate` for a token known by its hash (a console session names it so)."""
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = self._lookup(digest)
        if len(self._cache) >= AUTH_CACHE_SIZE:
            self._cache.clear()
        self._cache[digest] = (now + AUTH_CACHE_SECONDS, principal)
        return principal

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(hit, principal) from the cache alone: no I/O, safe on the event loop."""
        entry = self._cache.get(hash_token(token))
        if entry is None or entry[0] <= time.monotonic():
            return False, None
        return True, entry[1]

    def forget(self) -> None:
        """Drop cached principals (after a key is revoked in this process), and whatever other
        credential caches were registered (the webhook signatures' and secret URLs')."""
        self._cache.clear()
        for forget in self._also_forget:
            forget()

    def on_forget(self, forget: Callable[[], None]) -> None:
        self._also_forget.append(forget)

    def _lookup(self, digest: str) -> Principal | None:
        with self._uow() as uow:
            project = uow.projects.by_api_key(digest)
            if project is not None:
                return _principal(Role.PARTNER, project)
            project = uow.projects.by_webhook_token(digest)
            if project is not None:
                return _principal(Role.WEBHOOK, project)
            found = uow.projects.officer_by_token(digest)
            if found is not None:
                officer, projects = found
                return Principal(Role.OFFICER, officer.name, {p.id: p.name for p in projects})
        return None


def _principal(role: Role, project: Project) -> Principal | None:
    if project.status != ProjectStatus.ACTIVE:
        return None  # an offboarded partner's keys are revoked
    return Principal(role, project.name, {project.id: project.name})
