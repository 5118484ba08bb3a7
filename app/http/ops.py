"""Liveness and readiness (no auth)."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response

from app.http.deps import HealthDep
from app.services.views import HealthOut, ReadinessOut


@get("/healthz", tags=["operations"])
async def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut("ok")


@get("/readyz", sync_to_thread=True, tags=["operations"], responses={
    503: ResponseSpec(data_container=ReadinessOut, description="a store does not answer: the body says which"),
})
def readyz(health: HealthDep) -> Response[ReadinessOut]:
    """Both stores answer: 200, else 503 naming the one that does not. Also says how many
    acknowledged events wait in the ingest outbox, and for how long."""
    readiness = health.readiness()
    return Response(msgspec.convert(readiness.as_dict(), ReadinessOut), status_code=200 if readiness.ok else 503)
