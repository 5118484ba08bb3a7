"""One-time data steps of `lethe migrate`: what a schema or format change leaves to do to rows
that already exist, where the step needs LETHE_SECRET_KEY (so it cannot live in Alembic).

Each step is safe to run again and returns how many rows it changed. Once it has run to the
end it is recorded in `job_runs` as job `upgrade:<name>`, as the scheduled jobs' runs are, so
later migrates (every `lethe` command that opens the SQL store) skip it instead of searching
the tables for work. What a step changes it audits itself, in the transaction that changes it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from app.ports import Clock, UnitOfWorkFactory

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Upgrade:
    name: str
    run: Callable[[], int]  # rows changed; safe to run again (a crash leaves it unrecorded)


class Upgrades:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, steps: Sequence[Upgrade]) -> None:
        self._uow = uow
        self._clock = clock
        self._steps = steps

    def run(self) -> dict[str, int]:
        """Run the steps not recorded yet, in order; returns rows changed per step run."""
        with self._uow() as uow:
            pending = [step for step in self._steps if uow.job_runs.last(_job(step)) is None]
        changed: dict[str, int] = {}
        for step in pending:
            started = self._clock()
            changed[step.name] = rows = step.run()
            with self._uow() as uow:
                finished = self._clock()
                uow.job_runs.record(_job(step), as_of=finished, started_at=started, finished_at=finished,
                                    summary={"job": _job(step), "processed": rows})
                uow.commit()
            if rows:
                log.info("upgrade.done", upgrade=step.name, rows=rows)
        return changed


def _job(step: Upgrade) -> str:
    return f"upgrade:{step.name}"
