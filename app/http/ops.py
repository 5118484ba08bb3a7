"""Liveness and readiness (no auth)."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.response import Response

from app.http.deps import HealthDep


@get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/readyz", sync_to_thread=True, tags=["operations"])
def readyz(health: HealthDep) -> Response[dict[str, Any]]:
    """Both stores answer: 200, else 503 naming the one that does not. Also says how many
    acknowledged events wait in the ingest outbox, and for how long."""
    readiness = health.readiness()
    return Response(readiness.as_dict(), status_code=200 if readiness.ok else 503)
