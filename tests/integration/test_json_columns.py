"""JSON columns (request evidence, audit details, job summaries) are written and read through
msgspec, with the json module as the fallback for what msgspec refuses: on both dialects a
document comes back as it went in, and rows written by the json module still read."""

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, Table, select, text

from app.models import JobRun

RUNS: Table = JobRun.__table__  # type: ignore[assignment]
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _round_trip(engine: Engine, summary: dict[str, Any]) -> Any:
    with engine.begin() as conn:
        conn.execute(RUNS.insert(), {"id": "run-1", "job": "anonymise", "as_of": NOW, "started_at": NOW,
                                     "finished_at": NOW, "ok": True, "summary": summary})
        return conn.scalar(select(RUNS.c.summary).where(RUNS.c.id == "run-1"))


@pytest.mark.parametrize("summary", [
    {"stores": {"keys.analytics": {"anonymised": 1}, "sql.profiles": {"deleted": 0}}, "failed": 0},
    {"name": "Zoë 李 🙂", "big": 2**70, "ratio": 0.1, "nested": [1, [2, {"x": None}]], "flag": False},
    {"lone surrogate": "x\udcffy"},  # msgspec cannot encode it: the json module's escaped form is stored
])
def test_a_document_comes_back_as_it_went_in(engine: Engine, summary: dict[str, Any]) -> None:
    assert _round_trip(engine, summary) == summary


def test_rows_the_json_module_wrote_still_read(engine: Engine) -> None:
    """Text msgspec's decoder refuses (an escaped lone surrogate), written before the switch."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_runs (id, job, as_of, started_at, finished_at, ok, summary) "
                          "VALUES ('old', 'purge', :at, :at, :at, :ok, :summary)"),
                     {"at": NOW.replace(tzinfo=None), "ok": True,
                      "summary": '{"name": "x\\udcffy", "plain": "\\u00e9"}'})
        summary = conn.scalar(select(RUNS.c.summary).where(RUNS.c.id == "old"))
    assert summary == {"name": "x\udcffy", "plain": "é"}
