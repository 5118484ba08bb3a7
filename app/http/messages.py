"""Partner view of a chat message, and the officer's access report on a user."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery

from app.http.auth import officer_only, partner_only
from app.http.deps import ContainerDep
from app.services.accounts import Principal
from app.services.errors import NotFound


class MessagesController(Controller):
    path = "/v1/messages"
    guards = [partner_only]
    tags = ["messages"]

    @get("/{message_id:str}", sync_to_thread=True)
    def read(self, request: Request[Principal, Any, Any], message_id: FromPath[str],
             container: ContainerDep) -> dict[str, Any]:
        return container.messages.get(request.user.project_id, message_id)

    @post("/{message_id:str}/complaints/resolve", sync_to_thread=True, status_code=200)
    def resolve(self, request: Request[Principal, Any, Any], message_id: FromPath[str],
                container: ContainerDep) -> dict[str, Any]:
        """Process every open complaint; a deleted, reported message moves to the archive."""
        container.message_feed.resolve(request.user.project_id, message_id, actor=request.user.actor,
                                       now=container.now())
        return container.messages.get(request.user.project_id, message_id)


class SubjectsController(Controller):
    path = "/v1/subjects"
    guards = [officer_only]
    tags = ["subjects"]

    @get("/{user_id:str}", sync_to_thread=True)
    def report(self, request: Request[Principal, Any, Any], user_id: FromPath[str], container: ContainerDep,
               project: FromQuery[str | None] = None) -> dict[str, Any]:
        """What Lethe holds about this user in your projects, per store and table, with requests."""
        projects = request.user.projects
        if project is not None:
            projects = {pid: name for pid, name in projects.items() if name == project}
            if not projects:
                raise NotFound(f"project {project} not found")
        return container.subjects.report(projects, user_id)
