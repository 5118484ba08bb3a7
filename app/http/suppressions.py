"""Partners end a user's suppression after erasure (CONTRACT "Suppression")."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete
from litestar.params import FromPath

from app.http.auth import BEARER_SECURITY, partner_only
from app.http.deps import SuppressionsDep
from app.http.inputs import raw_segments
from app.services.accounts import Principal
from app.services.errors import NotFound
from app.services.suppressions import SuppressionService
from app.services.views import SuppressionOut


class SuppressionsController(Controller):
    security = BEARER_SECURITY
    path = "/v1/suppressions"
    guards = [partner_only]
    tags = ["deletion requests"]

    @delete("/{rest:path}", sync_to_thread=True, status_code=200)
    def lift(self, request: Request[Principal, Any, Any], rest: FromPath[str],
             suppressions: SuppressionsDep) -> SuppressionOut:
        """Events of this user are stored again (the user id percent-encoded; any character)."""
        return _lift(request, suppressions)

    @delete("/", sync_to_thread=True, status_code=200, include_in_schema=False)
    def lift_slashes(self, request: Request[Principal, Any, Any], suppressions: SuppressionsDep) -> SuppressionOut:
        """A user id made only of `/` (`%2F`): the router trims the decoded path to the bare prefix."""
        return _lift(request, suppressions)


def _lift(request: Request[Principal, Any, Any], suppressions: SuppressionService) -> SuppressionOut:
    segments = raw_segments(request.scope, "/v1/suppressions/")
    if len(segments) != 1 or not segments[0]:
        raise NotFound("no such route: use /v1/suppressions/{user_id} with the user id percent-encoded")
    return suppressions.lift(request.user.project_id, segments[0], actor=request.user.actor)
