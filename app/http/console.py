"""The officers' web console (`/console`, CONTRACT "Officers"): server-rendered pages and plain
forms over the same services as the officer API. Every asset is served by Lethe (no CDN).

Sessions: logging in with an officer token starts a server-side session (random id in a cookie:
HttpOnly, SameSite=Strict, Secure when the request came over https; 30 minutes idle), kept in
SQL so every API process knows it (app.services.console_sessions). The token is checked again on
every page, so a revoked officer is out at once (within the 5 s authentication cache). Every form
that changes something carries the session's CSRF token; a post without it is refused (403).
The login form, before any session, refuses posts a browser marks as cross-site (login CSRF).
Officers see only their projects.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import PermissionDeniedException
from litestar.params import Body, FromPath
from litestar.response import Redirect, Stream, Template

from app.domain.holds import Scope
from app.http.deps import AuditDep, ClockDep, ConsoleSessionsDep, HoldsDep, MetricsDep, OfficerRequestsDep
from app.http.errors import status_of
from app.http.holds import HoldIn
from app.http.schemas import aware
from app.services.accounts import Principal
from app.services.console_sessions import IDLE, ConsoleSessionService, Session
from app.services.errors import InvalidInput, ServiceError
from app.services.views import OfficerRequestPage

COOKIE = "lethe_console"
PAGE = 50
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _who(request: Request[Any, Any, Any], sessions: ConsoleSessionService) -> Session | None:
    return sessions.get(request.cookies.get(COOKIE))


class _LoginRequired(Exception):
    """No live console session: the page sends the browser to the login form."""

    status_code = 303  # answered by a redirect: not a fault (app.http.errors.log_fault)


def _officer(request: Request[Any, Any, Any], sessions: ConsoleSessionService) -> tuple[Principal, Session]:
    """The logged-in officer and their session, or _LoginRequired (a redirect to the login form)."""
    session = _who(request, sessions)
    if session is None:
        raise _LoginRequired
    return session.principal, session


def _checked(form: dict[str, str], session: Session) -> None:
    if not secrets.compare_digest(form.get("csrf", ""), session.csrf):
        raise PermissionDeniedException("this form is not from this console session (CSRF token missing or wrong)")


def _cross_site(request: Request[Any, Any, Any]) -> bool:
    """A browser's post from another site (login CSRF: another page logging the officer into
    someone else's session). Before a session there is no CSRF token to check, so the login
    form relies on what browsers say of a request's origin: `Sec-Fetch-Site`, else `Origin`
    (compared by host, as a proxy may end TLS). A client that sends neither (curl) is not a
    browser another site can drive."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    # the host the browser addressed: a proxy may rewrite Host and say so in X-Forwarded-Host (a
    # cross-site form cannot set that header, so trusting it here lets no other site through)
    hosts = {request.headers.get("host", ""), *request.headers.get("x-forwarded-host", "").split(",")}
    return origin == "null" or urlsplit(origin).netloc not in {h.strip() for h in hosts if h.strip()}


def _login() -> Redirect:
    return Redirect("/console/login", status_code=303)


def _page(name: str, principal: Principal, session: Session, status: int = 200, **context: Any) -> Template:
    return Template(template_name=f"console/{name}.html", status_code=status,
                    context={"officer": principal.actor.removeprefix("officer:"), "csrf": session.csrf,
                             "projects": sorted(principal.projects.values()), **context})


def _hold_form(form: dict[str, str], project: str) -> HoldIn:
    """The holds form as the API's body, checked by the same rules (a 201-character target or an
    expiry that is not a time is refused, not dropped). The form's datetime-local field has no
    zone: it is UTC, as the page says."""
    fields = {k: v.strip() for k in ("scope", "target", "reason", "reference", "expires_at")
              if (v := form.get(k, "")).strip()}
    if fields.get("scope") == Scope.PROJECT.value:
        fields["target"] = project
    with contextlib.suppress(ValueError):  # what does not parse is refused below, naming the field
        if "expires_at" in fields and (moment := datetime.fromisoformat(fields["expires_at"])).tzinfo is None:
            fields["expires_at"] = moment.replace(tzinfo=UTC).isoformat()
    try:
        return msgspec.convert(fields, HoldIn, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc).replace("$.", "")) from None


def chart(points: list[tuple[date, int]], title: str, width: int = 640, height: int = 160) -> str:
    """A line chart as inline SVG (drawn here: no charting library, no CDN). Values are counts."""
    if not points:
        return f'<p class="empty">No {title} for this period yet (aggregates are computed at 00:00 UTC).</p>'
    top = max(v for _, v in points) or 1
    step = (width - 40) / max(len(points) - 1, 1)
    coords = " ".join(f"{30 + i * step:.1f},{height - 20 - (v / top) * (height - 40):.1f}"
                      for i, (_, v) in enumerate(points))
    first, last = points[0][0].isoformat(), points[-1][0].isoformat()
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{title}">'
            f'<text x="30" y="12">{title} (max {top})</text>'
            f'<line x1="30" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" class="axis"/>'
            f'<polyline points="{coords}" class="line"/>'
            f'<text x="30" y="{height - 4}">{first}</text>'
            f'<text x="{width - 10}" y="{height - 4}" text-anchor="end">{last}</text></svg>')


def _refused(request: Request[Any, Any, Any], exc: Exception) -> Template:
    """Errors in the console are pages with a sentence, never JSON or a stack trace."""
    status = status_of(exc) if isinstance(exc, ServiceError) else getattr(exc, "status_code", 400)
    message = getattr(exc, "detail", "") or str(exc)
    return Template(template_name="console/error.html", status_code=status,
                    context={"officer": None, "message": message})


class ConsoleController(Controller):
    path = "/console"
    include_in_schema = False
    tags = ["console"]
    exception_handlers = {PermissionDeniedException: _refused, ServiceError: _refused,
                          _LoginRequired: lambda _request, _exc: _login()}

    @get("/", sync_to_thread=True)
    def home(self, request: Request[Any, Any, Any], console_sessions: ConsoleSessionsDep) -> Redirect:
        return Redirect("/console/queue" if _who(request, console_sessions) else "/console/login", status_code=303)

    @get("/login", sync_to_thread=False)
    def login_form(self) -> Template:
        return Template(template_name="console/login.html", context={"error": None})

    @post("/login", sync_to_thread=True, status_code=303)
    def login(self, request: Request[Any, Any, Any], data: Form,
              console_sessions: ConsoleSessionsDep) -> Response[Any]:
        if _cross_site(request):
            raise PermissionDeniedException("this login form was not sent from this console (cross-site request)")
        token = data.get("token", "").strip()
        sid = console_sessions.start(token) if token else None
        if sid is None:
            return Template(template_name="console/login.html", status_code=401,
                            context={"error": "That is not a valid officer token (or it was revoked)."})
        response: Response[Any] = Redirect("/console/queue", status_code=303)
        response.set_cookie(COOKIE, sid, path="/console", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", max_age=int(IDLE.total_seconds()))
        return response

    @post("/logout", sync_to_thread=True, status_code=303)
    def logout(self, request: Request[Any, Any, Any], data: Form,
               console_sessions: ConsoleSessionsDep) -> Response[Any]:
        session = _who(request, console_sessions)
        if session is not None:
            _checked(data, session)
            console_sessions.end(request.cookies.get(COOKIE, ""), session.principal)
        response: Response[Any] = _login()
        response.delete_cookie(COOKIE, path="/console")
        return response

    @get("/queue", sync_to_thread=True)
    def queue(self, request: Request[Any, Any, Any], console_sessions: ConsoleSessionsDep,
              officer_requests: OfficerRequestsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        q = request.query_params
        project = q.get("project") or None
        projects = {pid: n for pid, n in principal.projects.items() if project in (None, n)}
        overdue = {"yes": True, "no": False}.get(q.get("overdue") or "")
        try:
            page = officer_requests.page(projects, status=q.get("status") or None,
                                         source=q.get("source") or None, overdue=overdue,
                                         due_before=None, limit=PAGE, cursor=q.get("cursor") or None)
            error = None
        except ServiceError as exc:
            page, error = OfficerRequestPage([], None), str(exc)
        # what needs attention first: overdue, then on hold, then by deadline
        items = sorted(page.items, key=lambda r: (not r.overdue, r.status != "on_hold", r.due_by))
        return _page("queue", principal, session, items=items, next_cursor=page.next_cursor, error=error,
                     filters={k: q.get(k) or "" for k in ("project", "status", "source", "overdue")})

    @get("/requests/{request_id:str}", sync_to_thread=True)
    def request_detail(self, request: Request[Any, Any, Any], request_id: FromPath[str],
                       console_sessions: ConsoleSessionsDep, officer_requests: OfficerRequestsDep,
                       hold_service: HoldsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        try:
            item = officer_requests.get(principal.projects, request_id)
        except ServiceError as exc:
            return _page("request", principal, session, status_of(exc), item=None, error=str(exc), holds=[])
        holds = hold_service.page(principal.projects, active=True, limit=500, cursor=None).items
        blocking = {h["id"] for h in item.holds} | {h["id"] for h in item.kept}
        return _page("request", principal, session, item=item, error=None,
                     holds=[h for h in holds if h.id in blocking])

    @post("/requests/{request_id:str}/extend", sync_to_thread=True, status_code=303)
    def extend(self, request: Request[Any, Any, Any], request_id: FromPath[str], data: Form,
               console_sessions: ConsoleSessionsDep,
               officer_requests: OfficerRequestsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        _checked(data, session)
        try:
            officer_requests.extend(principal.projects, request_id, int(data.get("months") or 0),
                                    data.get("reason", "").strip() or "(no reason given)",
                                    actor=principal.actor)
        except ValueError as exc:
            return _page("request", principal, session, 400, item=None, error=str(exc), holds=[])
        except ServiceError as exc:
            return _page("request", principal, session, status_of(exc), item=None, error=str(exc), holds=[])
        return Redirect(f"/console/requests/{request_id}", status_code=303)

    @get("/holds", sync_to_thread=True)
    def holds(self, request: Request[Any, Any, Any], console_sessions: ConsoleSessionsDep,
              hold_service: HoldsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        page = hold_service.page(principal.projects, active=None, limit=PAGE,
                                 cursor=request.query_params.get("cursor") or None)
        return _page("holds", principal, session, items=page.items, next_cursor=page.next_cursor,
                     scopes=[s.value for s in Scope], error=request.query_params.get("error"))

    @post("/holds", sync_to_thread=True, status_code=303)
    def place(self, request: Request[Any, Any, Any], data: Form, console_sessions: ConsoleSessionsDep,
              hold_service: HoldsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        _checked(data, session)
        try:
            if not data.get("project"):
                raise InvalidInput("project: choose one of your projects")
            project_id, name = principal.one(data["project"])
            hold = _hold_form(data, name)
            hold_service.place(project_id, name, hold.scope, hold.target, hold.reason, reference=hold.reference,
                               expires_at=aware(hold.expires_at, "expires_at"), actor=principal.actor)
        except ServiceError as exc:
            page = hold_service.page(principal.projects, active=None, limit=PAGE, cursor=None)
            return _page("holds", principal, session, status_of(exc), items=page.items,
                         next_cursor=page.next_cursor, scopes=[s.value for s in Scope], error=str(exc))
        return Redirect("/console/holds", status_code=303)

    @post("/holds/{hold_id:str}/release", sync_to_thread=True, status_code=303)
    def release(self, request: Request[Any, Any, Any], hold_id: FromPath[str], data: Form,
                console_sessions: ConsoleSessionsDep,
                hold_service: HoldsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        _checked(data, session)
        try:
            hold_service.release(principal.projects, hold_id, actor=principal.actor)
        except ServiceError as exc:
            return Redirect(f"/console/holds?error={exc}", status_code=303)
        return Redirect("/console/holds", status_code=303)

    @get("/audit", sync_to_thread=True)
    def audit(self, request: Request[Any, Any, Any], console_sessions: ConsoleSessionsDep,
              audit_service: AuditDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        q = request.query_params
        page = audit_service.page(sorted(principal.projects.values()), action=q.get("action") or None,
                                  limit=PAGE, cursor=q.get("cursor") or None)
        return _page("audit", principal, session, items=page.items, next_cursor=page.next_cursor,
                     action=q.get("action") or "", verification=None)

    @post("/audit/verify", sync_to_thread=True)
    def verify(self, request: Request[Any, Any, Any], data: Form, console_sessions: ConsoleSessionsDep,
               audit_service: AuditDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        _checked(data, session)
        result = audit_service.verify()
        page = audit_service.page(sorted(principal.projects.values()), limit=PAGE)
        return _page("audit", principal, session, items=page.items, next_cursor=page.next_cursor,
                     action="", verification=result)

    @get("/audit/export/{fmt:str}", sync_to_thread=True)
    def export(self, request: Request[Any, Any, Any], fmt: FromPath[str], console_sessions: ConsoleSessionsDep,
               audit_service: AuditDep) -> Stream | Redirect:
        """The audit entries the page shows (the officer's projects, the page's `action` filter),
        all of them, as CSV or JSON lines."""
        principal, _session = _officer(request, console_sessions)
        if fmt not in ("csv", "jsonl"):
            raise InvalidInput(f"no export format {fmt!r}: csv or jsonl")
        lines = audit_service.export(sorted(principal.projects.values()), fmt,
                                     action=request.query_params.get("action") or None)
        return Stream(lines, media_type="text/csv" if fmt == "csv" else "application/x-ndjson",
                      headers={"Content-Disposition": f'attachment; filename="lethe-audit.{fmt}"'})

    @get("/metrics", sync_to_thread=True)
    def metrics(self, request: Request[Any, Any, Any], console_sessions: ConsoleSessionsDep,
                clock: ClockDep,
                metrics_service: MetricsDep) -> Template | Redirect:
        principal, session = _officer(request, console_sessions)
        names = sorted(principal.projects.values())
        project = request.query_params.get("project") or (names[0] if names else "")
        days = 180 if request.query_params.get("days") == "180" else 90
        charts: list[str] = []
        error = None
        if project in names:
            until = clock().date() - timedelta(days=1)
            try:
                rows = metrics_service.daily(project, until - timedelta(days=days - 1), until).items
            except Exception:
                rows, error = [], "The analytics store does not answer right now; try again in a minute."
            for key, title in (("dau", "DAU"), ("wau", "WAU"), ("mau", "MAU"), ("messages", "messages"),
                               ("reactions", "reactions")):
                charts.append(chart([(date.fromisoformat(r.day), int(getattr(r, key))) for r in rows], title))
        return _page("metrics", principal, session, project=project, days=days, charts=charts, error=error)
