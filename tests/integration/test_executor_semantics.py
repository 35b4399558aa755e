"""Behaviour suite for ``BalsamExecutor`` as a drop-in ``ProcessPoolExecutor``.

Modelled on CPython's ``Lib/test/test_concurrent_futures`` (test_wait, test_as_completed,
test_shutdown, executor, test_future, test_process_pool). Only the standard ``Executor`` /
``Future`` interface is used, so every test here must also pass against
``concurrent.futures.ProcessPoolExecutor`` (run with ``BALSAM_FUTURES_TEST_PEER=process``).
Tests that rely on behaviour ProcessPoolExecutor does not have (cloudpickle, surviving a crashed
worker, eager pickling at submit) are skipped for that peer only.

Tasks run in other processes, so they are synchronised with files in ``tmp_path``: a task blocked
on a gate polls for the gate file and the test creates it to release the task. Gates are always
opened at teardown, before the executors are shut down.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import threading
import time
import traceback
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    as_completed,
    wait,
)

import pytest
from gated import POLL_S, signal_then_wait_for_gate, wait_for_gate

pytestmark = pytest.mark.timeout(60)

PEER_IS_PROCESS_POOL = os.environ.get("BALSAM_FUTURES_TEST_PEER") == "process"

needs_cloudpickle = pytest.mark.skipif(
    PEER_IS_PROCESS_POOL, reason="needs cloudpickle semantics (ProcessPoolExecutor uses pickle)"
)
balsam_only = pytest.mark.skipif(
    PEER_IS_PROCESS_POOL, reason="BalsamExecutor-specific behaviour, not ProcessPoolExecutor's"
)

# How long the test side waits for anything a task signals (gated tasks give up after
# gated.GATE_BOUND_S, so a test fails rather than hangs).
RESULT_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------
# Module-level exception classes and task functions (they must be importable by the workers).
# --------------------------------------------------------------------------------------------


class TaskError(Exception):
    """Custom exception raised by a task."""


class SpecificTaskError(TaskError):
    """Subclass, to check that the exact class comes back, not just a base."""


class CallbackError(Exception):
    """Raised by done-callbacks."""


_INIT_VALUE = None


def add(a, b, c=0):
    return a + b + c


def square(x):
    return x * x


def identity(x):
    return x


def describe(*args, **kwargs):
    return args, dict(sorted(kwargs.items()))


def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


def raise_value_error(message):
    raise ValueError(message)


def raise_specific_task_error(message):
    raise SpecificTaskError(message)


def _innermost_remote_raiser(message):
    raise TaskError(message)


def outer_remote_function(message):
    _innermost_remote_raiser(message)


def value_or_wait_for_gate(value, gate):
    if gate is not None:
        wait_for_gate(gate)
    return value


def exit_process(code):
    os._exit(code)


def make_generator():
    return (i for i in range(3))


def set_init_value(value):
    global _INIT_VALUE
    _INIT_VALUE = value


def get_init_value():
    return _INIT_VALUE


# --------------------------------------------------------------------------------------------
# Test-side helpers and fixtures.
# --------------------------------------------------------------------------------------------


def wait_for_path(path, timeout=RESULT_TIMEOUT_S):
    """Wait (in the test process) until a task has created ``path``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            pytest.fail(f"{path} was not created within {timeout} s")
        time.sleep(POLL_S)


@pytest.fixture
def started_marker(tmp_path):
    return str(tmp_path / "started")


def warm_up(executor):
    """Run one task so that worker start-up time does not count against short timeouts."""
    assert executor.submit(identity, "warm").result(timeout=RESULT_TIMEOUT_S) == "warm"


# --------------------------------------------------------------------------------------------
# submit / result
# --------------------------------------------------------------------------------------------


def test_submit_result_with_args_and_kwargs(make_executor):
    ex = make_executor()
    assert ex.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT_S) == 3
    assert ex.submit(add, 1, 2, c=3).result(timeout=RESULT_TIMEOUT_S) == 6
    assert ex.submit(add, a=10, b=20).result(timeout=RESULT_TIMEOUT_S) == 30
    fut = ex.submit(describe, 1, "two", [3], x=4, y={"z": 5})
    assert fut.result(timeout=RESULT_TIMEOUT_S) == ((1, "two", [3]), {"x": 4, "y": {"z": 5}})
    assert fut.done()
    assert not fut.cancelled()
    assert fut.exception() is None


def test_submit_builtin_callable(make_executor):
    ex = make_executor()
    assert ex.submit(pow, 2, 10).result(timeout=RESULT_TIMEOUT_S) == 1024
    assert ex.submit(divmod, 17, 5).result(timeout=RESULT_TIMEOUT_S) == (3, 2)


def test_result_timeout_raises_timeout_error(make_executor, gate):
    ex = make_executor()
    fut = ex.submit(wait_for_gate, gate.path, "released")
    with pytest.raises(concurrent.futures.TimeoutError):
        fut.result(timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError):
        fut.exception(timeout=0.05)
    assert not fut.done()
    gate.open()
    assert fut.result(timeout=RESULT_TIMEOUT_S) == "released"


@needs_cloudpickle
def test_lambda_as_callable(make_executor):
    ex = make_executor()
    assert ex.submit(lambda x, y=1: x * 10 + y, 4, y=2).result(timeout=RESULT_TIMEOUT_S) == 42


@needs_cloudpickle
def test_closure_as_callable(make_executor):
    ex = make_executor()
    offset = 1000
    table = {"a": 1, "b": 2}

    def lookup(key):
        return table[key] + offset

    assert ex.submit(lookup, "b").result(timeout=RESULT_TIMEOUT_S) == 1002


@needs_cloudpickle
def test_map_with_lambda(make_executor):
    ex = make_executor()
    assert list(ex.map(lambda x: -x, range(5), timeout=RESULT_TIMEOUT_S)) == [0, -1, -2, -3, -4]


# --------------------------------------------------------------------------------------------
# map
# --------------------------------------------------------------------------------------------


def test_map_preserves_order(make_executor):
    ex = make_executor(max_workers=3)
    # Earlier items take longer, so completion order differs from input order.
    delays = [0.3, 0.2, 0.1, 0.0, 0.0, 0.0]
    results = list(ex.map(sleep_then_return, delays, range(len(delays)), timeout=RESULT_TIMEOUT_S))
    assert results == list(range(len(delays)))


def test_map_matches_builtin_map(make_executor):
    ex = make_executor()
    assert list(ex.map(square, range(20), timeout=RESULT_TIMEOUT_S)) == [x * x for x in range(20)]


def test_map_multiple_iterables(make_executor):
    ex = make_executor()
    assert list(ex.map(add, [1, 2, 3], [10, 20, 30], timeout=RESULT_TIMEOUT_S)) == [11, 22, 33]
    assert list(ex.map(add, [1, 2, 3], [10, 20, 30], [100, 200, 300])) == [111, 222, 333]
    # Like builtin map (zip semantics): stops at the shortest iterable.
    assert list(ex.map(add, [1, 2, 3], iter([10, 20]), timeout=RESULT_TIMEOUT_S)) == [11, 22]


def test_map_timeout_raises_timeout_error(make_executor, gate):
    ex = make_executor()
    warm_up(ex)
    results = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for value in ex.map(
            value_or_wait_for_gate, [1, 2, 3], [None, None, gate.path], timeout=1.5
        ):
            results.append(value)
    assert results == [1, 2]


def test_map_chunksize_gives_same_results(make_executor):
    ex = make_executor()
    expected = [x * x for x in range(53)]
    assert list(ex.map(square, range(53), chunksize=7, timeout=RESULT_TIMEOUT_S)) == expected
    assert list(ex.map(square, range(53), chunksize=100, timeout=RESULT_TIMEOUT_S)) == expected
    assert list(ex.map(add, range(10), range(10), chunksize=3)) == [2 * x for x in range(10)]


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_chunksize_below_one_raises_value_error(make_executor, chunksize):
    ex = make_executor()
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(square, range(3), chunksize=chunksize)


def test_map_exception_surfaces_at_failing_element(make_executor):
    ex = make_executor()
    it = ex.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5], timeout=RESULT_TIMEOUT_S)
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_exception_with_chunksize_surfaces_at_failing_element(make_executor):
    ex = make_executor()
    # ProcessPoolExecutor fails a whole chunk at its first element, so the failing item starts
    # a chunk here (chunks [0, 1], [2, 3], [4, 5]): both per-item and per-chunk execution must
    # yield the first four results and then raise.
    it = ex.map(divmod, [1] * 6, [2, 3, 4, 5, 0, 6], chunksize=2, timeout=RESULT_TIMEOUT_S)
    assert [next(it) for _ in range(4)] == [(0, 1)] * 4
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_empty_iterable(make_executor):
    ex = make_executor()
    assert list(ex.map(square, [])) == []
    assert list(ex.map(square, [], chunksize=5)) == []
    assert list(ex.map(add, [], [1, 2, 3])) == []


# --------------------------------------------------------------------------------------------
# exceptions
# --------------------------------------------------------------------------------------------


def test_exception_type_and_message_from_result_and_exception(make_executor):
    ex = make_executor()
    fut = ex.submit(raise_value_error, "boom 42")
    with pytest.raises(ValueError, match="boom 42"):
        fut.result(timeout=RESULT_TIMEOUT_S)
    exc = fut.exception(timeout=RESULT_TIMEOUT_S)
    assert type(exc) is ValueError
    assert exc.args == ("boom 42",)
    assert str(exc) == "boom 42"
    assert fut.done()
    assert not fut.cancelled()


def test_custom_exception_class_comes_back(make_executor):
    ex = make_executor()
    fut = ex.submit(raise_specific_task_error, "custom failure")
    with pytest.raises(TaskError, match="custom failure") as info:
        fut.result(timeout=RESULT_TIMEOUT_S)
    assert type(info.value) is SpecificTaskError
    exc = fut.exception()
    assert type(exc) is SpecificTaskError
    assert isinstance(exc, TaskError)
    assert exc.args == ("custom failure",)


def test_remote_traceback_is_visible(make_executor):
    ex = make_executor()
    fut = ex.submit(outer_remote_function, "deep failure")
    exc = fut.exception(timeout=RESULT_TIMEOUT_S)
    assert type(exc) is TaskError
    text = "".join(traceback.format_exception(exc))
    # Neither function ran in this process, so their names can only come from the worker's
    # traceback (ProcessPoolExecutor attaches it as a _RemoteTraceback in __cause__).
    assert "outer_remote_function" in text
    assert "_innermost_remote_raiser" in text
    assert "deep failure" in text


# --------------------------------------------------------------------------------------------
# wait()
# --------------------------------------------------------------------------------------------


def test_wait_first_completed(make_executor, gate):
    ex = make_executor()
    blocked = ex.submit(wait_for_gate, gate.path, "late")
    fast = ex.submit(identity, "early")
    done, not_done = wait([blocked, fast], timeout=RESULT_TIMEOUT_S, return_when=FIRST_COMPLETED)
    assert done == {fast}
    assert not_done == {blocked}
    gate.open()
    assert blocked.result(timeout=RESULT_TIMEOUT_S) == "late"


def test_wait_first_completed_with_already_finished_future(make_executor, gate):
    ex = make_executor()
    finished = ex.submit(identity, 1)
    finished.result(timeout=RESULT_TIMEOUT_S)
    blocked = ex.submit(wait_for_gate, gate.path)
    done, not_done = wait([finished, blocked], timeout=5, return_when=FIRST_COMPLETED)
    assert done == {finished}
    assert not_done == {blocked}


def test_wait_first_exception(make_executor, gate):
    ex = make_executor()
    blocked = ex.submit(wait_for_gate, gate.path, "late")
    ok = ex.submit(identity, "fine")
    failing = ex.submit(raise_value_error, "first exception")
    done, not_done = wait(
        [blocked, ok, failing], timeout=RESULT_TIMEOUT_S, return_when=FIRST_EXCEPTION
    )
    assert failing in done
    assert blocked in not_done
    assert done | not_done == {blocked, ok, failing}
    assert isinstance(failing.exception(), ValueError)
    gate.open()
    assert blocked.result(timeout=RESULT_TIMEOUT_S) == "late"


def test_wait_first_exception_without_exceptions_waits_for_all(make_executor):
    ex = make_executor()
    futures = [ex.submit(sleep_then_return, 0.05 * i, i) for i in range(4)]
    done, not_done = wait(futures, timeout=RESULT_TIMEOUT_S, return_when=FIRST_EXCEPTION)
    assert done == set(futures)
    assert not_done == set()


def test_wait_all_completed(make_executor):
    ex = make_executor()
    futures = [ex.submit(sleep_then_return, 0.05 * i, i) for i in range(4)]
    failing = ex.submit(raise_value_error, "still completed")
    done, not_done = wait(futures + [failing], timeout=RESULT_TIMEOUT_S, return_when=ALL_COMPLETED)
    assert done == set(futures) | {failing}
    assert not_done == set()
    assert [f.result() for f in futures] == [0, 1, 2, 3]


def test_wait_timeout_returns_not_done(make_executor, gate):
    ex = make_executor()
    finished = ex.submit(identity, "done")
    assert finished.result(timeout=RESULT_TIMEOUT_S) == "done"
    blocked = ex.submit(wait_for_gate, gate.path, "late")
    t0 = time.monotonic()
    done, not_done = wait([finished, blocked], timeout=0.3, return_when=ALL_COMPLETED)
    assert time.monotonic() - t0 < 10
    assert done == {finished}
    assert not_done == {blocked}
    gate.open()
    assert blocked.result(timeout=RESULT_TIMEOUT_S) == "late"


# --------------------------------------------------------------------------------------------
# as_completed()
# --------------------------------------------------------------------------------------------


def test_as_completed_yields_all(make_executor):
    ex = make_executor()
    futures = [ex.submit(square, i) for i in range(10)]
    yielded = list(as_completed(futures, timeout=RESULT_TIMEOUT_S))
    assert len(yielded) == 10
    assert set(yielded) == set(futures)
    assert sorted(f.result() for f in yielded) == [i * i for i in range(10)]


def test_as_completed_yields_in_completion_order(make_executor, gate):
    ex = make_executor()
    blocked = ex.submit(wait_for_gate, gate.path, "late")
    fast = ex.submit(identity, "early")
    it = as_completed([blocked, fast], timeout=RESULT_TIMEOUT_S)
    assert next(it) is fast
    gate.open()
    assert next(it) is blocked
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_yields_finished_futures_immediately(make_executor, gate):
    ex = make_executor()
    finished = [ex.submit(identity, i) for i in range(3)]
    for f in finished:
        f.result(timeout=RESULT_TIMEOUT_S)
    blocked = ex.submit(wait_for_gate, gate.path)
    t0 = time.monotonic()
    it = as_completed([blocked, *finished], timeout=RESULT_TIMEOUT_S)
    first_three = {next(it), next(it), next(it)}
    assert first_three == set(finished)
    # They were yielded without waiting for the blocked future.
    assert time.monotonic() - t0 < 5
    assert not blocked.done()


def test_as_completed_timeout_raises_timeout_error(make_executor, gate):
    ex = make_executor()
    finished = ex.submit(identity, "done")
    finished.result(timeout=RESULT_TIMEOUT_S)
    blocked = ex.submit(wait_for_gate, gate.path)
    yielded = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for f in as_completed([finished, blocked], timeout=0.3):
            yielded.append(f)
    assert yielded == [finished]


def test_as_completed_counts_duplicates_once(make_executor):
    ex = make_executor()
    f1 = ex.submit(identity, 1)
    f2 = ex.submit(identity, 2)
    yielded = list(as_completed([f1, f1, f2, f1, f2], timeout=RESULT_TIMEOUT_S))
    assert len(yielded) == 2
    assert set(yielded) == {f1, f2}


# --------------------------------------------------------------------------------------------
# add_done_callback
# --------------------------------------------------------------------------------------------


def test_done_callback_called_once_with_future(make_executor, gate):
    ex = make_executor()
    calls = []
    called = threading.Event()

    def callback(f):
        calls.append(f)
        called.set()

    fut = ex.submit(wait_for_gate, gate.path, "value")
    fut.add_done_callback(callback)
    assert calls == []
    gate.open()
    assert called.wait(RESULT_TIMEOUT_S)
    assert fut.result(timeout=RESULT_TIMEOUT_S) == "value"
    ex.shutdown(wait=True)
    assert len(calls) == 1
    assert calls[0] is fut


def test_done_callback_sees_exception(make_executor):
    ex = make_executor()
    seen = []
    called = threading.Event()

    def callback(f):
        seen.append(f.exception())
        called.set()

    fut = ex.submit(raise_value_error, "in callback")
    fut.add_done_callback(callback)
    assert called.wait(RESULT_TIMEOUT_S)
    assert len(seen) == 1
    assert isinstance(seen[0], ValueError)
    assert str(seen[0]) == "in callback"


def test_done_callback_added_after_completion_runs_immediately(make_executor):
    ex = make_executor()
    fut = ex.submit(identity, 5)
    assert fut.result(timeout=RESULT_TIMEOUT_S) == 5
    calls = []
    fut.add_done_callback(lambda f: calls.append((f, threading.current_thread())))
    # Called synchronously, in the thread that added it.
    assert calls == [(fut, threading.current_thread())]


def test_done_callback_exception_is_logged_not_raised(make_executor, gate, caplog):
    ex = make_executor()
    later_calls = []
    later_called = threading.Event()

    def raising_callback(f):
        raise CallbackError("callback failed")

    def later_callback(f):
        later_calls.append(f)
        later_called.set()

    with caplog.at_level(logging.ERROR):
        # Registered before completion: runs in the executor's machinery, which must survive.
        fut = ex.submit(wait_for_gate, gate.path, "value")
        fut.add_done_callback(raising_callback)
        fut.add_done_callback(later_callback)
        gate.open()
        assert later_called.wait(RESULT_TIMEOUT_S)
        assert later_calls == [fut]
        assert fut.result(timeout=RESULT_TIMEOUT_S) == "value"

        # Registered after completion: runs right away and must not raise into the caller.
        fut.add_done_callback(raising_callback)

    logged = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.exc_info and isinstance(r.exc_info[1], CallbackError)
    ]
    assert len(logged) == 2
    # The executor still works after a callback raised.
    assert ex.submit(add, 2, 3).result(timeout=RESULT_TIMEOUT_S) == 5


# --------------------------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------------------------


def _submit_queue_behind_blockers(ex, gate, n=8):
    """One worker, ``n`` tasks all blocked on ``gate``: the last ones are surely still queued."""
    return [ex.submit(wait_for_gate, gate.path, i) for i in range(n)]


def test_cancel_queued_future(make_executor, gate):
    ex = make_executor(max_workers=1)
    blocked = _submit_queue_behind_blockers(ex, gate)
    target = ex.submit(identity, "never")
    assert target.cancel() is True
    assert target.cancelled()
    assert target.done()
    assert not target.running()
    with pytest.raises(CancelledError):
        target.result(timeout=1)
    with pytest.raises(CancelledError):
        target.exception(timeout=1)
    # Cancelling again still answers True (the future is cancelled).
    assert target.cancel() is True
    gate.open()
    # wait() and as_completed() treat the cancelled future as done. (Not necessarily before the
    # executor reaches it in its queue: concurrent.futures counts a cancelled future in wait()
    # only once the executor has called set_running_or_notify_cancel() on it.)
    done, not_done = wait([target, *blocked], timeout=RESULT_TIMEOUT_S)
    assert target in done
    assert not_done == set()
    assert list(as_completed([target], timeout=RESULT_TIMEOUT_S)) == [target]
    assert [f.result(timeout=RESULT_TIMEOUT_S) for f in blocked] == list(range(len(blocked)))
    assert target.cancelled()
    with pytest.raises(CancelledError):
        target.result(timeout=0)


def test_cancel_runs_done_callbacks(make_executor, gate):
    ex = make_executor(max_workers=1)
    _submit_queue_behind_blockers(ex, gate)
    target = ex.submit(identity, "never")
    calls = []
    target.add_done_callback(calls.append)
    assert target.cancel() is True
    assert calls == [target]


def test_cancel_finished_future_returns_false(make_executor):
    ex = make_executor()
    fut = ex.submit(identity, "finished")
    assert fut.result(timeout=RESULT_TIMEOUT_S) == "finished"
    assert fut.cancel() is False
    assert not fut.cancelled()
    assert fut.result() == "finished"


def test_cancel_running_future_returns_false(make_executor, gate, started_marker):
    ex = make_executor(max_workers=1)
    fut = ex.submit(signal_then_wait_for_gate, started_marker, gate.path, "ran")
    wait_for_path(started_marker)
    assert fut.cancel() is False
    assert not fut.cancelled()
    gate.open()
    assert fut.result(timeout=RESULT_TIMEOUT_S) == "ran"


# --------------------------------------------------------------------------------------------
# shutdown
# --------------------------------------------------------------------------------------------


def test_submit_after_shutdown_raises_runtime_error(make_executor):
    ex = make_executor()
    assert ex.submit(identity, 1).result(timeout=RESULT_TIMEOUT_S) == 1
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(identity, 2)


def test_submit_after_shutdown_without_tasks_raises_runtime_error(make_executor):
    ex = make_executor()
    ex.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        ex.submit(identity, 2)


def test_shutdown_wait_true_waits_for_running_tasks(make_executor):
    ex = make_executor()
    futures = [ex.submit(sleep_then_return, 0.3, i) for i in range(4)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]


def test_shutdown_wait_false_returns_and_futures_complete(make_executor, gate):
    ex = make_executor()
    futures = [ex.submit(wait_for_gate, gate.path, i) for i in range(4)]
    ex.shutdown(wait=False)
    # It returned while every task was still blocked on the closed gate.
    assert not any(f.done() for f in futures)
    with pytest.raises(RuntimeError):
        ex.submit(identity, 1)
    gate.open()
    done, not_done = wait(futures, timeout=RESULT_TIMEOUT_S)
    assert not_done == set()
    assert [f.result() for f in futures] == [0, 1, 2, 3]


def test_shutdown_cancel_futures(make_executor, gate, started_marker):
    ex = make_executor(max_workers=1)
    first = ex.submit(signal_then_wait_for_gate, started_marker, gate.path, 0)
    rest = [ex.submit(wait_for_gate, gate.path, i) for i in range(1, 10)]
    futures = [first, *rest]
    wait_for_path(started_marker)
    ex.shutdown(wait=False, cancel_futures=True)
    # With the gate closed the last task can only become done by being cancelled. Poll the
    # future's state: futures cancelled by shutdown() never reach CANCELLED_AND_NOTIFIED in
    # ProcessPoolExecutor, so wait()/as_completed() would not report them.
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while not futures[-1].cancelled():
        assert time.monotonic() < deadline, "shutdown(cancel_futures=True) cancelled nothing"
        time.sleep(POLL_S)
    gate.open()
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= 1
    # None lost: every future is either cancelled or completes with its result. The running
    # task cannot have been cancelled.
    assert not first.cancelled()
    for i, f in enumerate(futures):
        if not f.cancelled():
            assert f.result(timeout=RESULT_TIMEOUT_S) == i
        assert f.done()


def test_context_manager_shuts_down(make_executor):
    ex = make_executor()
    with ex as entered:
        assert entered is ex
        futures = [ex.submit(sleep_then_return, 0.2, i) for i in range(3)]
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        ex.submit(identity, 1)


def test_shutdown_twice_is_fine(make_executor):
    ex = make_executor()
    assert ex.submit(identity, 1).result(timeout=RESULT_TIMEOUT_S) == 1
    ex.shutdown()
    ex.shutdown()
    ex.shutdown(wait=False)
    ex.shutdown(wait=True, cancel_futures=True)


def test_shutdown_unused_executor(make_executor):
    ex = make_executor()
    ex.shutdown(wait=True)
    ex.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# constructor errors (same exception types as ProcessPoolExecutor)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"max_workers": 0}, ValueError, "max_workers", id="max_workers=0"),
        pytest.param({"max_workers": -1}, ValueError, "max_workers", id="max_workers=-1"),
        pytest.param(
            {"max_workers": 2, "initializer": "not callable"},
            TypeError,
            "initializer",
            id="initializer-not-callable",
        ),
        pytest.param(
            {"max_workers": 2, "max_tasks_per_child": 0},
            ValueError,
            "max_tasks_per_child",
            id="max_tasks_per_child=0",
        ),
        pytest.param(
            {"max_workers": 2, "max_tasks_per_child": -3},
            ValueError,
            "max_tasks_per_child",
            id="max_tasks_per_child=-3",
        ),
        pytest.param(
            {"max_workers": 2, "max_tasks_per_child": "3"},
            TypeError,
            "max_tasks_per_child",
            id="max_tasks_per_child-not-int",
        ),
        pytest.param(
            {"max_workers": 2, "max_tasks_per_child": 1.5},
            TypeError,
            "max_tasks_per_child",
            id="max_tasks_per_child-float",
        ),
    ],
)
def test_constructor_errors(make_executor, kwargs, error, match):
    with pytest.raises(error, match=f"(?i){match}"):
        make_executor(**kwargs)


# --------------------------------------------------------------------------------------------
# initializer / max_tasks_per_child
# --------------------------------------------------------------------------------------------


def test_initializer_runs_in_each_worker_before_tasks(make_executor):
    assert get_init_value() is None  # never set in the test process
    ex = make_executor(max_workers=2, initializer=set_init_value, initargs=("initialised",))
    futures = [ex.submit(get_init_value) for _ in range(8)]
    assert [f.result(timeout=RESULT_TIMEOUT_S) for f in futures] == ["initialised"] * 8
    assert get_init_value() is None


def test_max_tasks_per_child_one_uses_fresh_workers(make_executor):
    kwargs = {"max_workers": 1, "max_tasks_per_child": 1}
    if PEER_IS_PROCESS_POOL:
        kwargs["mp_context"] = multiprocessing.get_context("spawn")
    ex = make_executor(**kwargs)
    pids = [ex.submit(os.getpid).result(timeout=RESULT_TIMEOUT_S) for _ in range(3)]
    assert len(set(pids)) == 3
    assert os.getpid() not in pids


# --------------------------------------------------------------------------------------------
# crashes and pickling failures
# --------------------------------------------------------------------------------------------


def test_task_that_kills_its_process_fails(make_executor):
    ex = make_executor()
    fut = ex.submit(exit_process, 3)
    exc = fut.exception(timeout=RESULT_TIMEOUT_S)
    assert isinstance(exc, Exception)
    with pytest.raises(Exception):  # noqa: B017
        fut.result(timeout=0)


@balsam_only
def test_executor_survives_a_task_that_kills_its_process(make_executor):
    ex = make_executor()
    crashed = ex.submit(exit_process, 3)
    assert isinstance(crashed.exception(timeout=RESULT_TIMEOUT_S), Exception)
    assert ex.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT_S) == 3
    assert list(ex.map(square, range(4), timeout=RESULT_TIMEOUT_S)) == [0, 1, 4, 9]


@balsam_only
def test_unpicklable_argument_raises_at_submit(make_executor):
    ex = make_executor()
    with pytest.raises(Exception):  # noqa: B017
        ex.submit(identity, threading.Lock())
    # Nothing was left pending: the executor keeps working and shuts down promptly.
    assert ex.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT_S) == 3
    t0 = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - t0 < 10


def test_unpicklable_argument_fails_without_hanging(make_executor):
    ex = make_executor()
    try:
        fut = ex.submit(identity, threading.Lock())
    except Exception:
        pass  # BalsamExecutor: fails eagerly at submit
    else:  # ProcessPoolExecutor: the future fails once the argument is pickled
        with pytest.raises(Exception):  # noqa: B017
            fut.result(timeout=RESULT_TIMEOUT_S)
    assert ex.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT_S) == 3


def test_unpicklable_result_raises(make_executor):
    ex = make_executor()
    fut = ex.submit(make_generator)
    with pytest.raises(Exception):  # noqa: B017
        fut.result(timeout=RESULT_TIMEOUT_S)
    assert fut.done()
    assert isinstance(fut.exception(), Exception)
    # The executor still works afterwards.
    assert ex.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT_S) == 3


# --------------------------------------------------------------------------------------------
# volume
# --------------------------------------------------------------------------------------------


def test_many_tiny_tasks(make_executor):
    ex = make_executor()
    futures = [ex.submit(add, i, i) for i in range(500)]
    done, not_done = wait(futures, timeout=RESULT_TIMEOUT_S)
    assert not_done == set()
    assert [f.result() for f in futures] == [2 * i for i in range(500)]
