"""The master with very many outstanding futures: what each costs in memory, and operations
over all of them at once (a shutdown that cancels them all)."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import sqlite3
import threading
import tracemalloc

import pytest

from balsam_futures import BalsamExecutor
from balsam_futures.backends.executor_ops import ID_CHUNK
from balsam_futures.futures import BalsamFuture

pytestmark = pytest.mark.timeout(120)


def noop(i):
    return i


def test_a_waiting_future_holds_no_condition_until_it_is_used():
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        futures = [BalsamFuture(i, None, i) for i in range(5_000)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per_future = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(futures)
    # A concurrent.futures.Future is about 1.6 KB, mostly its Condition.
    assert per_future < 400, per_future
    f = futures[0]
    assert f._cond is None and not f.done() and not f.running() and not f.cancelled()
    f.set_result(7)
    assert f.result() == 7 and f.done()


def test_a_future_run_and_finished_unwatched_stays_lean():
    f = BalsamFuture(1, None, 1)
    assert f.set_running_or_notify_cancel() and f.running()
    f.set_result(5)
    assert f._cond is None  # nobody waited: no condition was ever made
    assert f.result() == 5
    g = BalsamFuture(2, None, 2)
    g.set_exception(ValueError("boom"))
    assert g._cond is None and isinstance(g.exception(), ValueError)
    with pytest.raises(cf.InvalidStateError):
        g.set_result(1)


def test_a_waiter_blocked_before_the_result_is_woken():
    for _ in range(50):
        f = BalsamFuture(1, None, 1)
        got = []
        t = threading.Thread(target=lambda f=f, got=got: got.append(f.result(timeout=30)))
        t.start()
        f.set_result(9)
        t.join(30)
        assert got == [9]


def test_lazy_fields_are_made_once_under_races():
    for _ in range(50):
        f = BalsamFuture(1, None, 1)
        seen = []
        start = threading.Barrier(4)

        def grab(f=f, seen=seen, start=start):
            start.wait()
            seen.append(f._condition)

        threads = [threading.Thread(target=grab) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(c) for c in seen}) == 1


def test_waiters_and_callbacks_of_a_lean_future_work_as_the_standard_ones():
    f = BalsamFuture(1, None, 1)
    called = []
    f.add_done_callback(called.append)
    done_event = threading.Event()

    def waiter():
        cf.wait([f], timeout=30)
        done_event.set()

    t = threading.Thread(target=waiter)
    t.start()
    f.set_result(3)
    t.join(30)
    assert done_event.is_set() and called == [f]
    assert list(cf.as_completed([f])) == [f]


def test_shutdown_cancels_more_futures_than_one_statement_may_name(site_dir):
    # More ids than SQLite's 32,766 bound variables: the cancel goes in chunks of ID_CHUNK.
    n = 33_000
    assert n > 3 * ID_CHUNK
    ex = BalsamExecutor(site=site_dir, launcher=False)
    futs = [ex.submit(noop, i) for i in range(n)]
    ex.flush()
    # SQLite's default limit (some builds raise it; this one may have): set on the
    # connection of this thread, which the shutdown's cancel uses.
    ex._store._dbapi_connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in futs)
    gc.collect()
    with BalsamExecutor(site=site_dir, launcher=False) as again:
        counts = again.tasks().by_state()
    assert counts.get("CANCELLED") == n, counts
