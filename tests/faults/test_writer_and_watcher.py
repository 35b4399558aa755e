"""What the database still refuses fails only its own tasks; a thread that cannot go on breaks
the executor loudly instead of dying silently.

The submit-time checks (tests/faults/test_bad_inputs.py) refuse whatever they know the
database would.  These tests push values past those checks, straight into the writer's
queue, so that the real database rejects them: the writer must split the batch until the
offending tasks are alone, fail those with the database's words, and store the rest.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from balsam_futures import BalsamExecutor, ExecutorBroken, StoreRejected, TaskOptions
from balsam_futures.tasks import TaskSpec

pytestmark = pytest.mark.timeout(60)


def square(x):
    return x * x


def _unchecked(spec: TaskSpec, **changes) -> TaskSpec:
    """``spec`` with option values the submit-time checks would refuse (set behind them)."""
    options = spec.options
    for key, value in changes.items():
        object.__setattr__(options, key, value)
    return dataclasses.replace(spec, options=options)


def _spec(ex: BalsamExecutor, x: int, options: TaskOptions | None = None) -> TaskSpec:
    from balsam_futures.serialization import dump_callable

    return ex._make_spec(options or TaskOptions(), "python", dump_callable(square), (x,), {},
                         "square")


@pytest.fixture(params=["sqlite", "postgres"])
def executor(request, tmp_path):
    kwargs = {"site": tmp_path / "site", "launcher": False}
    if request.param == "postgres":
        kwargs["db_url"] = request.getfixturevalue("pg_url")
    ex = BalsamExecutor(**kwargs)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


def test_a_rejected_task_fails_alone_and_the_batch_around_it_is_stored(executor):
    ex = executor
    good = [_spec(ex, i) for i in range(40)]
    bad = _unchecked(_spec(ex, 99, TaskOptions()), priority=2**63)
    specs = good[:20] + [bad] + good[20:]
    # One put: the writer takes all 41 in one batch, and the database refuses it whole.
    futures = ex._submitter.put(specs)
    assert ex.flush(timeout=30)
    bad_future = futures[20]
    err = bad_future.exception(timeout=10)
    assert isinstance(err, StoreRejected), repr(err)
    assert "refused" in str(err)
    stored = [f for f in futures if f is not bad_future]
    assert all(f.task_id is not None for f in stored)
    assert ex.store.count_by_state() == {"READY": 40}
    # The writer goes on: later submissions are stored as usual.
    assert ex.submit(square, 3).task_id is not None


def test_a_dead_writer_breaks_the_executor_and_every_waiting_future(executor, monkeypatch):
    ex = executor
    first = ex.submit(square, 1)
    assert first.task_id is not None

    def explode(specs):
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(ex.store, "create_tasks", explode)
    doomed = [ex.submit(square, i) for i in range(5)]
    for fut in doomed:
        err = fut.exception(timeout=10)
        assert isinstance(err, ExecutorBroken), repr(err)
        assert "a bug in the writer" in str(err)
    # Already stored, still waiting for a launcher: it fails too, instead of hanging.
    assert isinstance(first.exception(timeout=10), ExecutorBroken)
    with pytest.raises(ExecutorBroken, match="writer"):
        ex.submit(square, 7)
    assert ex.flush(timeout=1)  # nobody waits forever on what will never be written


def test_a_dead_watcher_breaks_the_executor_and_every_waiting_future(executor, monkeypatch):
    ex = executor
    fut = ex.submit(square, 2)
    assert fut.task_id is not None

    def explode(*args, **kwargs):
        raise RuntimeError("a bug in the watcher")

    monkeypatch.setattr(ex.store, "read_events", explode)
    monkeypatch.setattr(ex.store, "changed", lambda: True)
    err = fut.exception(timeout=10)
    assert isinstance(err, ExecutorBroken), repr(err)
    assert "watcher" in str(err)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ex._broken is None:
        time.sleep(0.01)
    with pytest.raises(ExecutorBroken, match="watcher"):
        ex.submit(square, 7)
