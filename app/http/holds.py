"""Compliance officers place and release regulatory holds (CONTRACT §3 "Holds")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from app.domain.holds import Scope
from app.http.auth import BEARER_SECURITY, officer_only
from app.http.deps import HeldDataDep, HoldsDep
from app.http.schemas import Cursor, Limit, Reason, Reference, UserId, aware
from app.services.accounts import Principal
from app.services.views import HeldDataOut, HoldOut, HoldPage


class HoldIn(msgspec.Struct, forbid_unknown_fields=True):
    scope: Scope
    target: Annotated[UserId, msgspec.Meta(examples=["BUmXxFyNMNE6FUVhL+ECSQ=="])]
    reason: Annotated[Reason, msgspec.Meta(examples=["court order 12/2026"])]
    reference: Reference | None = None
    expires_at: datetime | None = None
    project: Reference | None = None  # needed when the officer covers several projects


class HoldController(Controller):
    security = BEARER_SECURITY
    path = "/v1/holds"
    guards = [officer_only]
    tags = ["holds"]

    @post("/", sync_to_thread=True, status_code=201)
    def place(self, request: Request[Principal, Any, Any], data: JSONBody[HoldIn],
              hold_service: HoldsDep) -> HoldOut:
        """Freeze data: nothing it covers is altered or deleted until the hold is released."""
        project_id, name = request.user.one(data.project)
        return hold_service.place(project_id, name, data.scope, data.target, data.reason,
                                                  reference=data.reference,
                                                  expires_at=aware(data.expires_at, "expires_at"),
                                                  actor=request.user.actor)

    @get("/", sync_to_thread=True)
    def list(self, request: Request[Principal, Any, Any], hold_service: HoldsDep,
             active: FromQuery[bool | None] = None, limit: Limit = 50, cursor: Cursor = None) -> HoldPage:
        return hold_service.page(request.user.projects, active=active, limit=limit, cursor=cursor)

    @get("/{hold_id:str}/data", sync_to_thread=True)
    def data(self, request: Request[Principal, Any, Any], hold_id: FromPath[str],
             held: HeldDataDep, limit: Limit = 50, cursor: Cursor = None) -> HeldDataOut:
        """What the hold keeps, decrypted, for the regulator: a room or message hold's messages
        and event values (under its own key); a user hold's user, a project hold's users (a page
        of `limit`, then `next_cursor`), each with profile, messages and events. Each read is
        audited (`hold.data_read`)."""
        return held.data(request.user.projects, hold_id, actor=request.user.actor, limit=limit, cursor=cursor)

    @delete("/{hold_id:str}", sync_to_thread=True, status_code=200)
    def release(self, request: Request[Principal, Any, Any], hold_id: FromPath[str],
                hold_service: HoldsDep) -> HoldOut:
        """Release the hold (audited; the record stays). Held work resumes on its own."""
        return hold_service.release(request.user.projects, hold_id, actor=request.user.actor)
