"""Partner view of a chat message, and the officer's access report on a user."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, FromQuery

from app.http.auth import BEARER_SECURITY, partner_only, partner_or_officer
from app.http.deps import ClockDep, MessageFeedDep, MessagesDep, SubjectsDep
from app.http.inputs import raw_segments
from app.services.accounts import Principal, Role
from app.services.errors import NotFound
from app.services.subjects import SubjectService
from app.services.views import MessageOut, SubjectExport, SubjectReport


class MessagesController(Controller):
    """`/v1/messages/{message_id}` and `/v1/messages/{message_id}/complaints/resolve`. The
    platform's message ids may hold any character, `/` included, percent-encoded: read from the
    raw path as the subject routes do."""

    security = BEARER_SECURITY
    path = "/v1/messages"
    guards = [partner_only]
    tags = ["messages"]

    @get("/{rest:path}", sync_to_thread=True)
    def read(self, request: Request[Principal, Any, Any], rest: FromPath[str],
             message_service: MessagesDep) -> MessageOut:
        """`GET /v1/messages/{message_id}`: the message's state (its text never leaves Lethe)."""
        return message_service.get(request.user.project_id, _message_path(request, ""))

    @get("/", sync_to_thread=True, include_in_schema=False)
    def read_slashes(self, request: Request[Principal, Any, Any], message_service: MessagesDep) -> MessageOut:
        """An id made only of `/` (`%2F`): the router trims the decoded path to the bare prefix."""
        return message_service.get(request.user.project_id, _message_path(request, ""))

    @post("/{rest:path}", sync_to_thread=True, status_code=200)
    def resolve(self, request: Request[Principal, Any, Any], rest: FromPath[str],
                clock: ClockDep, message_feed: MessageFeedDep,
                message_service: MessagesDep) -> MessageOut:
        """`POST /v1/messages/{message_id}/complaints/resolve`: process every open complaint; a
        deleted, reported message moves to the archive."""
        message_id = _message_path(request, "complaints/resolve")
        message_feed.resolve(request.user.project_id, message_id, actor=request.user.actor,
                             now=clock())
        return message_service.get(request.user.project_id, message_id)


def _message_path(request: Request[Principal, Any, Any], action: str) -> str:
    """The message id from the raw path (each segment percent-decoded on its own), followed by
    `action`'s segments."""
    segments = raw_segments(request.scope, "/v1/messages/")
    tail = action.split("/") if action else []
    if len(segments) == 1 + len(tail) and segments[0] and segments[1:] == tail:
        return segments[0]
    raise NotFound("no such route: use /v1/messages/{message_id} or /v1/messages/{message_id}/complaints/resolve, "
                   "with the message id percent-encoded")


class SubjectsController(Controller):
    security = BEARER_SECURITY
    """`/v1/subjects/{user_id}` (officer: the access report) and `/v1/subjects/{user_id}/export`
    (partner or officer: everything held, decrypted). User ids may hold any character,
    `/` included, percent-encoded: the id is read from the raw path, segment by segment, since
    the router sees `%2F` already decoded into a separator."""

    path = "/v1/subjects"
    guards = [partner_or_officer]
    tags = ["subjects"]

    @get("/{rest:path}", sync_to_thread=True)
    def read(self, request: Request[Principal, Any, Any], rest: FromPath[str],
             subjects: SubjectsDep,
             project: FromQuery[str | None] = None) -> SubjectReport | SubjectExport:
        return _subject(request, subjects, project)

    @get("/", sync_to_thread=True, include_in_schema=False)
    def read_slashes(self, request: Request[Principal, Any, Any], subjects: SubjectsDep,
                     project: FromQuery[str | None] = None) -> SubjectReport | SubjectExport:
        """A user id made only of `/` (`%2F`): the router trims the decoded path to the bare prefix."""
        return _subject(request, subjects, project)


def _subject(request: Request[Principal, Any, Any], subjects: SubjectService,
             project: str | None) -> SubjectReport | SubjectExport:
    user_id, action = _subject_path(raw_segments(request.scope, "/v1/subjects/"))
    projects = request.user.scoped(project)
    if action == "export":
        return subjects.export(projects, user_id, actor=request.user.actor)
    if request.user.role is not Role.OFFICER:
        raise PermissionDeniedException("the access report needs an officer token")
    return subjects.report(projects, user_id)


def _subject_path(segments: list[str]) -> tuple[str, str]:
    """(user id, "" or "export") from the decoded segments after /v1/subjects/."""
    if len(segments) == 1 and segments[0]:
        return segments[0], ""
    if len(segments) == 2 and segments[0] and segments[1] == "export":
        return segments[0], "export"
    raise NotFound("no such route: use /v1/subjects/{user_id} or /v1/subjects/{user_id}/export, "
                   "with the user id percent-encoded")
