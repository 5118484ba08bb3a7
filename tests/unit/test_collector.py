"""app.collector: the cyclic collector is off inside a batch and back as it was afterwards."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from app import collector


@pytest.fixture(autouse=True)
def _collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    gc.enable() if was else gc.disable()


def test_paused_inside_and_resumed_after_even_when_the_batch_fails() -> None:
    inside: list[bool] = []

    def batch() -> None:
        with collector.paused():
            inside.append(gc.isenabled())
            raise RuntimeError("the batch failed")

    with pytest.raises(RuntimeError):
        batch()
    assert inside == [False]
    assert gc.isenabled()


def test_overlapping_batches_resume_it_when_the_last_one_ends() -> None:
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other_batch() -> None:
        first_in.wait()
        with collector.paused():
            pass
        seen.append(gc.isenabled())  # the first batch still runs: still paused
        second_done.set()

    thread = threading.Thread(target=other_batch)
    thread.start()
    with collector.paused():
        first_in.set()
        assert second_done.wait(5)
        assert not gc.isenabled()
    thread.join()
    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled() -> None:
    gc.disable()
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
