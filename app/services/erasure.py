"""The anonymise and purge jobs' use case: claim due requests, erase in batches, record evidence.

For each batch:
1. a short transaction leases the due requests and lets holds decide which may proceed
   (app.services.hold_precedence);
2. the external stores (ClickHouse) run one batched, idempotent statement for those subjects,
   in a thread, while the users' ids are read (and decrypted) beside it;
3. one transaction locks the requests again and asks the state machine, on the rows as they
   are now, whether the step is still due for each: a request restored (or held) since step 1
   is left exactly as it is. Only then do the SQL steps run, for the requests that are still
   due, and their transitions, evidence and audit entries commit with them, all or nothing.
Transient failures (deadlocks, a busy database) retry the transaction; any other failure marks
the batch `failed` and releases its lease, so the next run retries it. Leases last a minute
and a live run renews them (a heartbeat thread); a crash or `kill -9` leaves leases that the
next run takes over within that minute. A run that finds due work leased by another live run
says by whom and until when (`leased_elsewhere` in its summary).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from app import collector
from app.domain import requests as lifecycle
from app.domain.audit import AuditRecord
from app.domain.holds import Hold
from app.domain.requests import Mode, Source, Status, Step, TransitionRefused
from app.domain.statuses import SubjectStatus
from app.models import DeletionRequest
from app.ports import Clock, ErasureBatch, ExternalErasureStep, SqlErasureStep, UnitOfWork, UnitOfWorkFactory
from app.retry import retry_transient
from app.services.callbacks import CallbackService
from app.services.hold_precedence import HoldPrecedence, kept_places
from app.services.holds import HoldService
from app.services.identities import Identities
from app.services.request_rows import apply_state, audit_subject, state_of, to_view
from app.services.summary import JobSummary

log = structlog.get_logger(__name__)
LEASE = timedelta(seconds=60)  # a killed run's requests are taken over within a minute...
HEARTBEAT = timedelta(seconds=15)  # ...while a live run renews its leases this often
RUNNER = f"{socket.gethostname()}:{os.getpid()}"
Evidence = dict[str, dict[str, Mapping[str, int]]]  # store -> kind ("anonymised"...) -> subject -> rows
# (transaction, keeping holds, subject ids): take those subjects' held messages (and who wrote
# them) under the holds' keys
KeepIn = Callable[[UnitOfWork, Sequence[Hold], Collection[str]], object]


class StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step} failed: {type(cause).__name__}")
        self.step = step


class ErasureService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, secret_key: bytes, identities: Identities,
                 sql_steps: Sequence[SqlErasureStep], external_steps: Sequence[ExternalErasureStep],
                 after_run: Callable[[], object] = lambda: None, batch_size: int = 10_000,
                 holds: HoldService | None = None, before_run: Callable[[], object] = lambda: None,
                 callbacks: CallbackService | None = None, keep_in: KeepIn | None = None) -> None:
        self._callbacks = callbacks
        self._keep_in = keep_in
        self._before_run = before_run
        self._ids = identities
        self._uow = uow
        self._clock = clock
        self._key = secret_key
        self._sql_steps = list(sql_steps)
        self._external = list(external_steps)
        self._after_run = after_run
        self.batch_size = batch_size
        self._precedence = HoldPrecedence(holds, identities, secret_key, self._notify) if holds else None
        self.heartbeat = HEARTBEAT

    def anonymise(self, now: datetime) -> JobSummary:
        """Hide every pending subject and blank its personal columns; immediate ones are purged too."""
        return self._run(Step.ANONYMISE, now)

    def purge(self, now: datetime) -> JobSummary:
        """Delete the personal rows of requests whose grace has ended, and destroy the link."""
        return self._run(Step.PURGE, now)

    # ------------------------------------------------------------------------------------
    def _run(self, step: Step, now: datetime) -> JobSummary:
        summary = JobSummary(step.value, now)
        tried: list[str] = []
        settled = self._settle_holds()
        if step is Step.PURGE:  # counted as held below, where this run claims them again
            retry_transient(self._hold_covered_in_grace)
        while True:
            with collector.paused():  # a batch's objects live until it ends: see app.collector
                claimed, free, held, batch = retry_transient(lambda: self._claim(step, now, tried, settled))
                if not claimed:
                    if not tried:
                        self._report_leased_elsewhere(step, now, summary)
                    break
                tried.extend(claimed)
                summary.held += held
                if free:
                    try:
                        with self._heartbeat(free):
                            self._process(step, now, free, batch, summary, settled)
                    except StepFailed as exc:
                        log.warning("erasure.step_failed", step=exc.step, requests=len(free))
                        detail = str(exc)
                        retry_transient(lambda: self._fail(free, detail))  # noqa: B023 - called at once
                        summary.failed += len(free)
            # progress on long runs (one line per batch of up to batch_size requests)
            log.info("erasure.progress", job=step.value, processed=summary.processed, held=summary.held,
                     failed=summary.failed)
            if len(claimed) < self.batch_size:
                break
        # destroyed keys and purged rows leave the stores' files (SQLite WAL, PostgreSQL's
        # key table): at once on SQLite, within minutes on PostgreSQL (app.services.key_compaction)
        self._after_run()
        return summary

    def _hold_covered_in_grace(self) -> None:
        """Requests in grace that a standing user or project hold covers go `on_hold` now, with
        the holds that stop them (audited, partners called back), not when their purge comes
        due: a batch per run. Once on hold, every purge run follows their holds (`_claim`)."""
        if self._precedence is None:
            return
        with self._uow() as uow:
            ids = self._precedence.covered_in_grace(uow, self.batch_size)
            if not ids:
                return
            wall = self._clock()
            rows = [row for row in uow.requests.lock(ids) if row.status == Status.IN_GRACE.value
                    and (row.lease_until is None or row.lease_until < wall)]
            self._precedence.sort(uow, rows, True)
            uow.commit()

    def _settle_holds(self) -> bool:
        """Before a run: what room and message holds cover goes under their keys (services.held),
        so that destroying a user's keys leaves it readable. If that fails (ClickHouse down), every
        covering hold stops its requests for this run, as a user hold does."""
        try:
            self._before_run()
        except Exception as exc:
            log.warning("erasure.holds_not_settled", error=type(exc).__name__)
            return False
        return True

    def _claim(self, step: Step, now: datetime, tried: Sequence[str],
               settled: bool = True) -> tuple[list[str], list[str], int, ErasureBatch]:
        """Lease the due requests; returns the claimed and the free request ids, how many are
        held, and what the stores need to find the free ones' rows."""
        with self._uow() as uow:
            rows = uow.requests.claim(step, now, self._clock(), LEASE, self.batch_size, tried, RUNNER)
            free, held, kept = self._sort_by_holds(uow, rows, settled)
            # a request on hold is claimed before its step is due, to follow its holds: once
            # they are gone it resumes (above) and waits for its step like any other
            waiting = {row.id for row in free if lifecycle.step_due(state_of(row), now) is not step}
            for row in free:
                if row.id in waiting:
                    row.lease_until = None
            free = [row for row in free if row.id not in waiting]
            batch = self._batch(uow, free, kept)
            uow.commit()
        return [row.id for row in rows], [row.id for row in free], len(held), batch

    @contextmanager
    def _heartbeat(self, request_ids: Sequence[str]) -> Iterator[None]:
        """Renew this run's leases every HEARTBEAT while the batch is processed, so that a
        long batch keeps them and a killed run loses them within LEASE."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat.total_seconds()):
                try:
                    retry_transient(lambda: self._renew(request_ids))
                except Exception as exc:  # the next beat tries again; the run itself goes on
                    log.warning("erasure.heartbeat_failed", error=type(exc).__name__)

        thread = threading.Thread(target=beat, name="erasure-lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _renew(self, request_ids: Sequence[str]) -> None:
        with self._uow() as uow:
            uow.requests.renew(request_ids, RUNNER, self._clock() + LEASE)
            uow.commit()

    def _report_leased_elsewhere(self, step: Step, now: datetime, summary: JobSummary) -> None:
        """Nothing was claimable: say whether another live run holds due work, and until when."""
        with self._uow() as uow:
            leased = uow.requests.leased_elsewhere(step, now, self._clock())
        summary.leased_elsewhere = [{"by": by, "until": until.isoformat(), "requests": n} for by, until, n in leased]
        for entry in summary.leased_elsewhere:
            log.info("erasure.leased_elsewhere", job=step.value, **entry)

    def _sort_by_holds(self, uow: UnitOfWork, rows: Sequence[DeletionRequest],
                       settled: bool) -> tuple[list[DeletionRequest], list[DeletionRequest], list[Hold]]:
        """(free, held) rows and the keeping holds: app.services.hold_precedence."""
        if self._precedence is None:
            return list(rows), [], []
        return self._precedence.sort(uow, rows, settled)

    def _batch(self, uow: UnitOfWork, rows: Sequence[DeletionRequest], keeping: Sequence[Hold]) -> ErasureBatch:
        """What the stores need to find the requests' rows, and what the keeping holds leave in
        place. The user ids (`user_of`) are read next, beside the external stores (`_process`)."""
        rooms, messages = kept_places(uow, keeping)
        return ErasureBatch(
            project_of={row.subject_id: row.project_id for row in rows},
            user_of={},
            immediate=frozenset(row.subject_id for row in rows if row.mode == Mode.IMMEDIATE.value),
            asked=frozenset(row.subject_id for row in rows
                            if row.source in (Source.PARTNER_API.value, Source.USER.value)),
            kept_rooms=rooms, kept_messages=messages,
        )

    def _process(self, step: Step, now: datetime, ids: list[str], batch: ErasureBatch,
                 summary: JobSummary, settled: bool) -> None:
        # 1. External stores: one batched statement per store for the whole batch (idempotent;
        #    what they did for a request restored meanwhile is what its anonymisation did anyway),
        #    in a thread: meanwhile this one reads the users' ids (one key opened per subject;
        #    ClickHouse works outside the GIL). They are read before any link goes: the steps,
        #    the audit entries' subject hashes and the callbacks need them.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="erasure-external") as pool:
            external = pool.submit(self._external_steps, step, batch)
            users = retry_transient(lambda: self._user_ids(batch))
            evidence = external.result()
        batch = replace(batch, user_of=users)
        # 2. SQL: re-check, then the steps, transitions, evidence and audit in one transaction.
        try:
            retry_transient(lambda: self._commit_step(step, now, ids, batch, evidence, summary, settled))
        except StepFailed:
            raise
        except Exception as exc:  # a store error: recorded on the request, retried next run
            raise StepFailed(f"{step.value} (sql)", exc) from exc

    def _commit_step(self, step: Step, now: datetime, ids: list[str], batch: ErasureBatch, evidence: Evidence,
                     summary: JobSummary, settled: bool) -> None:
        """The guarded write: lock the requests, keep those for which the state machine still
        allows `step` (nothing restored, purged or held meanwhile), and only for those run the
        destructive SQL steps and the transitions, in one transaction."""
        with self._uow() as uow:
            rows, held, keeping = self._sort_by_holds(uow, uow.requests.lock(ids), settled)
            rooms, messages = kept_places(uow, keeping)  # a hold sealed since the claim keeps its part too
            batch = replace(batch, kept_rooms=batch.kept_rooms | rooms, kept_messages=batch.kept_messages | messages)
            due = [row for row in rows if lifecycle.step_due(state_of(row), now) is step]
            due_ids = {row.id for row in due}  # a set: `row in due` made this loop quadratic (0.4 s at 10,000)
            for row in rows:
                if row.id not in due_ids and row.lease_until is not None:
                    row.lease_until = None  # moved on meanwhile: nothing of ours to finish
            proceed = _only(batch, frozenset(row.subject_id for row in due))
            purge_now = proceed if step is Step.PURGE else _only(proceed, proceed.immediate)
            counts: Evidence = {store: dict(kinds) for store, kinds in evidence.items()}
            if step is Step.ANONYMISE:
                for sql_step in self._sql_steps:
                    counts.setdefault(sql_step.name, {})["anonymised"] = sql_step.anonymise(uow, proceed)
                uow.subjects.set_status(proceed.subject_ids, SubjectStatus.HIDDEN)
            if purge_now.project_of and keeping and self._keep_in is not None:
                # what arrived since the run took held data (before_run) goes under the holds'
                # keys too, authors included, in this transaction, before the steps destroy the
                # links and (immediate) the content keys
                self._keep_in(uow, keeping, purge_now.subject_ids)
            if purge_now.project_of:
                for sql_step in self._sql_steps:
                    counts.setdefault(sql_step.name, {})["deleted"] = sql_step.purge(uow, purge_now)
                uow.subjects.destroy_links(purge_now.subject_ids, self._clock())
                residual = self._residual(uow, purge_now)
                if any(residual.values()):
                    bad = ", ".join(sorted(k for k, v in residual.items() if v))
                    raise StepFailed(f"purge residual check ({bad})", RuntimeError())
            names = uow.projects.names({row.project_id for row in due})
            # due-ness is decided as of `now` (a run --now ahead); what happened is stamped with the
            # time it happened: `--now` never changes stored timestamps of new records (CONTRACT §2)
            stamped = self._clock()
            processed = [self._advance(uow, row, names[row.project_id], step, stamped, counts, batch, purge_now)
                         for row in due]
            uow.requests.save(rows)  # one statement per kind of change, not one UPDATE per request
            self._notify(uow, due, lambda _ids: batch.user_of)  # read before the links went
            uow.commit()
        summary.held += len(held)
        for mine in processed:
            summary.processed += 1
            summary.count(mine)
        summary.purged += sum(1 for row in due if row.subject_id in purge_now.project_of)

    def _user_ids(self, batch: ErasureBatch) -> dict[str, str]:
        with self._uow() as uow:
            return self._ids.user_ids_of(uow, list(batch.project_of))

    def _external_steps(self, step: Step, batch: ErasureBatch) -> Evidence:
        evidence: Evidence = {}
        if step is Step.ANONYMISE:
            self._external_step("anonymise", batch, evidence)
        purge_now = batch if step is Step.PURGE else _only(batch, batch.immediate)
        if purge_now.project_of:
            self._external_step("purge", purge_now, evidence)
        return evidence

    def _external_step(self, phase: str, batch: ErasureBatch,
                       evidence: dict[str, dict[str, Mapping[str, int]]]) -> None:
        for store in self._external:
            try:
                counts = store.anonymise(batch) if phase == "anonymise" else store.purge(batch)
                kinds = evidence.setdefault(store.name, {})
                kind = "anonymised" if phase == "anonymise" else store.purged_as
                # merged per subject: a store may count its purge as "anonymised" too, and a run
                # that anonymises a batch purges only its immediate requests
                kinds[kind] = {**kinds.get(kind, {}), **counts}
            except Exception as exc:
                raise StepFailed(f"{phase} ({store.name})", exc) from exc

    def _residual(self, uow: UnitOfWork, batch: ErasureBatch) -> dict[str, int]:
        residual = {step.name: sum(step.residual(uow, batch).values()) for step in self._sql_steps}
        residual.update({store.name: sum(store.residual(batch).values()) for store in self._external})
        residual["sql.subjects"] = uow.subjects.linked(batch.subject_ids)
        return residual

    def _advance(self, uow: UnitOfWork, row: DeletionRequest, project: str, step: Step, stamped: datetime,
                 evidence: Evidence, batch: ErasureBatch, purged: ErasureBatch) -> dict[str, dict[str, int]]:
        """Move a locked, due request on, with its evidence and one audit entry per step that
        ran, stamped with the service's clock. Returns its own evidence counts."""
        state = state_of(row)
        is_purged = row.subject_id in purged.project_of
        actions = []
        if step is Step.ANONYMISE:
            state = lifecycle.after_anonymised(state)
            row.anonymised_at = stamped
            actions.append("deletion_request.anonymised")
        if is_purged:
            state = lifecycle.after_purged(state)
            row.completed_at = stamped
            actions.append("deletion_request.completed")
        apply_state(row, state)
        row.lease_until, row.detail = None, None
        subject_id, before = row.subject_id, row.evidence  # read once: ORM attributes, 10,000 rows a batch
        mine = {store: {kind: counts.get(subject_id, 0) for kind, counts in per_kind.items()}
                for store, per_kind in evidence.items()}
        if is_purged:
            for counts in mine.values():
                counts["residual"] = 0  # checked above: the whole batch had none
        row.evidence = {**before, **{store: {**before.get(store, {}), **counts} for store, counts in mine.items()}}
        user = batch.user_of.get(subject_id)
        subject = audit_subject(row, self._key, project, user)
        for action in actions:
            uow.audit(AuditRecord(f"job:{step.value}", action, project, subject,
                                  {"request_id": row.id, "evidence": mine}))
        return mine

    def _fail(self, request_ids: Sequence[str], detail: str) -> None:
        """The step failed for the batch: the requests still waiting for it become `failed`
        (retried by the next run) and their leases are released."""
        with self._uow() as uow:
            rows = uow.requests.lock(request_ids)
            names = uow.projects.names({row.project_id for row in rows})
            newly_failed = []
            for row in rows:
                try:
                    state = lifecycle.after_failure(state_of(row))
                except TransitionRefused:
                    continue  # moved on meanwhile (restored, say): not ours to fail
                if row.status != state.status.value:
                    newly_failed.append(row)
                apply_state(row, state)
                row.attempts += 1
                row.detail, row.lease_until = detail, None
                uow.audit(AuditRecord("job:erasure", "deletion_request.failed", names[row.project_id],
                                      audit_subject(row, self._key, names[row.project_id], None),
                                      {"request_id": row.id, "detail": detail, "attempts": row.attempts}))
            self._notify(uow, newly_failed, lambda ids: self._ids.user_ids_of(uow, ids))
            uow.commit()

    def _notify(self, uow: UnitOfWork, rows: Sequence[DeletionRequest],
                users_of: Callable[[Sequence[str]], Mapping[str, str]]) -> None:
        """The rows' transitions into their partners' callback outbox (same transaction)."""
        if self._callbacks is not None and rows:
            now = self._clock()
            self._callbacks.record(uow, rows, users_of, lambda row, name: to_view(row, name, None, now))


def _only(batch: ErasureBatch, subject_ids: frozenset[str]) -> ErasureBatch:
    return ErasureBatch({k: v for k, v in batch.project_of.items() if k in subject_ids},
                        {k: v for k, v in batch.user_of.items() if k in subject_ids},
                        batch.immediate & subject_ids, batch.asked & subject_ids, batch.kept_rooms,
                        batch.kept_messages)
