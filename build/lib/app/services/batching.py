"""Group commit: many callers' small writes share one transaction and one commit.

Callers (request threads) `submit` an item and block until the transaction that holds it has
committed, so a 2xx still means durably stored. One writer thread takes whatever has queued
up while the previous batch was committing, up to `max_batch`: under light load every batch is
a single item (no added latency), under heavy load the fixed per-transaction costs (BEGIN, the
audit chain's head lock, COMMIT's fsync) are shared.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    def __init__(self, run_batch: Callable[[Sequence[T]], Sequence[R | BaseException]], *,
                 max_batch: int = 256, name: str = "group-commit") -> None:
        """`run_batch` returns one result (or exception) per item, in order."""
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def submit(self, item: T) -> R:
        """Queue `item` and wait for its result (from a worker thread)."""
        return self.enqueue(item).result()

    def enqueue(self, item: T) -> Future[R]:
        """Queue `item`; the future completes once its batch has committed (await it with
        asyncio.wrap_future from the event loop: no thread is held while waiting)."""
        if not self._started:
            with self._lock:
                if not self._started:
                    self._thread.start()
                    self._started = True
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self._run_batch([item for item, _ in batch])
            except BaseException as exc:  # the whole batch failed: every caller hears why
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
