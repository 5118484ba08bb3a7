"""Liveness and readiness (no auth)."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.response import Response
from sqlalchemy import text

from app.http.deps import ContainerDep


@get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/readyz", sync_to_thread=True, tags=["operations"])
def readyz(container: ContainerDep) -> Response[dict[str, Any]]:
    """Both stores answer: 200, else 503 naming the one that does not. Also says how many
    acknowledged events wait in the ingest outbox, and for how long."""
    checks: dict[str, str] = {}
    try:
        with container.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["sql"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["sql"] = f"unavailable: {type(exc).__name__}"
    if container.clickhouse_in_worker:  # not this process's to open: the worker drains the outbox into it
        checks["clickhouse"] = "ok (owned by lethe worker)"
    else:
        try:
            checks["clickhouse"] = "ok" if container.clickhouse.ping() else "unavailable"
        except Exception as exc:
            checks["clickhouse"] = f"unavailable: {type(exc).__name__}"
    ok = all(v.startswith("ok") for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", **checks}
    if checks["sql"] == "ok":  # events acknowledged but not yet in ClickHouse
        body["outbox"] = container.outbox.depth().as_dict()
    return Response(body, status_code=200 if ok else 503)
