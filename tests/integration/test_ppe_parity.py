"""ProcessPoolExecutor parity, side by side: each test runs the same code against
``concurrent.futures.ProcessPoolExecutor`` and ``BalsamExecutor`` (the ``kind`` parameter),
so a difference between them shows as one of the two failing.

Covered: a future built by hand (``type(fut)()``); what a task prints reaching the master's
stdout and stderr (scripts run as subprocesses: at exit without shutdown(), and after
``shutdown(wait=False, cancel_futures=True)``); ``shutdown(cancel_futures=True)`` cancelling
what has not started; no references kept to a done future's arguments or result (CPython's
``test_no_stale_references``); a failing initializer breaking the executor (CPython's
``test_initializer``); ``map`` of a ShellApp against ``map`` of the same command as a
callable.  Tests of behaviour only BalsamExecutor has say so in their name.  The file
parametrizes itself, so ``BALSAM_FUTURES_TEST_PEER`` changes nothing here.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    CancelledError,
    Future,
    InvalidStateError,
    ProcessPoolExecutor,
    as_completed,
    wait,
)
from pathlib import Path

import pytest
from gated import POLL_S, wait_for_gate

from balsam_futures import BalsamExecutor, ShellApp

pytestmark = pytest.mark.timeout(90)

RESULT_TIMEOUT_S = 30.0
KINDS = ["process", "balsam"]
#: For behaviour only BalsamExecutor has (named test_balsam_*): its ``kind`` alone.
balsam_only = pytest.mark.parametrize("kind", ["balsam"])


# -- task functions (module level: workers import them from this module) ---------------------


class Payload:
    """A weakref-able object to pass as an argument or return as a result."""

    def method(self):
        return None


def identity(x):
    return x


def make_payload():
    return Payload()


def mark_then_sleep(marker, seconds, value):
    Path(marker).touch()
    time.sleep(seconds)
    return value


def raise_in_initializer():
    raise ValueError("error in initializer")


def echo_value(x):
    """What ``ShellApp("echo {x}")`` prints, from a callable (the ProcessPoolExecutor side)."""
    return subprocess.run(["echo", str(x)], capture_output=True, text=True,
                          check=True).stdout.strip()


def job_out_last_line(ctx, result):
    return result.tail(1)


def echo_after_gate(x, gate):
    wait_for_gate(gate)
    return echo_value(x)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def new_executor(kind, site_dir):
    made = []

    def factory(max_workers=2, **kwargs):
        if kind == "process":
            ex = ProcessPoolExecutor(max_workers=max_workers, **kwargs)
        else:
            ex = BalsamExecutor(max_workers=max_workers, site=site_dir, **kwargs)
        made.append(ex)
        return ex

    yield factory
    for ex in made:
        try:
            ex.shutdown(wait=True, cancel_futures=True)
        except BrokenExecutor:
            pass


def wait_until(predicate, what, timeout=RESULT_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(POLL_S)


# -- 1. a future built by hand ------------------------------------------------------------------


def test_type_of_future_builds_a_plain_future(new_executor):
    ex = new_executor()
    cls = type(ex.submit(identity, 1))
    fut = cls()
    assert repr(fut) == Future.__repr__(fut)
    assert not fut.running() and not fut.done() and not fut.cancelled()
    calls = []
    fut.add_done_callback(calls.append)
    assert fut.set_running_or_notify_cancel() is True
    assert fut.running()
    assert fut.cancel() is False  # running
    fut.set_result("value")
    assert fut.done() and fut.result(timeout=0) == "value" and fut.exception(timeout=0) is None
    assert repr(fut) == Future.__repr__(fut)
    assert calls == [fut]
    with pytest.raises(InvalidStateError):
        fut.set_result("again")
    with pytest.raises(InvalidStateError):
        fut.set_exception(ValueError("late"))
    late = []
    fut.add_done_callback(late.append)  # runs at once on a done future
    assert late == [fut]

    failed = cls()
    failed.set_exception(KeyError("k"))
    assert isinstance(failed.exception(timeout=0), KeyError)
    with pytest.raises(KeyError):
        failed.result(timeout=0)

    cancelled = cls()
    cancelled_calls = []
    cancelled.add_done_callback(cancelled_calls.append)
    assert cancelled.cancel() is True
    assert cancelled.cancelled() and cancelled.done() and cancelled_calls == [cancelled]
    assert cancelled.set_running_or_notify_cancel() is False
    with pytest.raises(CancelledError):
        cancelled.result(timeout=0)
    with pytest.raises(InvalidStateError):
        cancelled.set_result(1)
    assert repr(cancelled) == Future.__repr__(cancelled)

    running = cls()
    running.set_running_or_notify_cancel()
    with pytest.raises(RuntimeError):
        running.set_running_or_notify_cancel()  # twice: as Future, a RuntimeError


def test_plain_futures_work_with_wait_and_as_completed(new_executor):
    ex = new_executor()
    cls = type(ex.submit(identity, 1))
    first, second, never = cls(), cls(), cls()
    for f in (first, second, never):
        f.set_running_or_notify_cancel()
    timer = threading.Timer(0.05, first.set_result, args=("first",))
    timer.start()
    done, not_done = wait([first, second, never], timeout=RESULT_TIMEOUT_S,
                          return_when=FIRST_COMPLETED)
    assert done == {first} and not_done == {second, never}
    threading.Timer(0.05, second.set_exception, args=(ValueError("second"),)).start()
    order = []
    with pytest.raises(TimeoutError):
        for f in as_completed([first, second, never], timeout=2.0):
            order.append(f)
    assert order == [first, second]
    timer.join()


# -- 2. what a task prints reaches the master's stdout and stderr ------------------------------


SCRIPT = textwrap.dedent("""
    import sys
    import time
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from balsam_futures import BalsamExecutor


    def complain(text):
        print(text, file=sys.stderr, end="")


    def mark_then_print(marker, text):
        Path(marker).touch()
        time.sleep(0.5)
        print(text, end="")
        print(text.upper(), file=sys.stderr, end="")


    if __name__ == "__main__":
        kind, site, mode, marker = sys.argv[1:5]
        if kind == "process":
            ex = ProcessPoolExecutor(max_workers=1)
        else:
            ex = BalsamExecutor(max_workers=1, site=site)
        if mode == "exit":  # no shutdown(): the interpreter's exit hook waits for the tasks
            ex.submit(print, "apple")
            ex.submit(complain, "pear")
        elif mode == "cancel":
            ex.submit(mark_then_print, marker, "apple")
            for _ in range(5):
                ex.submit(print, "banana")
            while not Path(marker).exists():
                time.sleep(0.005)
            ex.shutdown(wait=False, cancel_futures=True)
        elif mode == "result":  # the output is written before the result is reported
            ex.submit(print, "apple", end="").result()
            sys.stderr.write("seen: " + Path(marker).read_text())
            ex.shutdown()
""")


def run_script(tmp_path, kind, mode):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "stdout.txt"
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # a task's print is block-buffered, as in real use
    marker = out if mode == "result" else tmp_path / "started"
    with open(out, "wb") as stdout:
        proc = subprocess.run([sys.executable, str(script), kind, str(tmp_path / "site"), mode,
                               str(marker)], stdout=stdout, stderr=subprocess.PIPE, env=env,
                              timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return out.read_text(), proc.stderr.decode()


def test_task_output_reaches_stdout_at_exit_without_shutdown(tmp_path, kind):
    stdout, stderr = run_script(tmp_path, kind, "exit")
    assert stdout == "apple\n"
    assert "pear" in stderr


def test_task_output_reaches_stdout_after_shutdown_cancel_futures(tmp_path, kind):
    stdout, stderr = run_script(tmp_path, kind, "cancel")
    # The running task finished and printed; of the queued ones, ProcessPoolExecutor may have
    # moved two to its call queue (max_workers + 1 slots) already, which then run.
    assert stdout.startswith("apple")
    assert stdout.count("banana") <= 2
    assert "APPLE" in stderr


@balsam_only
def test_balsam_task_output_is_written_before_its_result(tmp_path, kind):
    # A worker is killed when its launcher stops: it writes out what a task printed first.
    _stdout, stderr = run_script(tmp_path, kind, "result")
    assert "seen: apple" in stderr


# -- 3. shutdown(cancel_futures=True) ----------------------------------------------------------


def test_shutdown_cancel_futures_cancels_every_task_not_started(new_executor, kind, tmp_path):
    workers, total = 2, 20
    ex = new_executor(max_workers=workers)
    markers = [tmp_path / f"started-{i}" for i in range(total)]
    futures = [ex.submit(mark_then_sleep, str(m), 0.5, i) for i, m in enumerate(markers)]
    wait_until(lambda: any(m.exists() for m in markers), "no task started")
    ex.shutdown(wait=True, cancel_futures=True)
    cancelled = [i for i, f in enumerate(futures) if f.cancelled()]
    # ProcessPoolExecutor also runs what it already moved to its call queue (max_workers + 1
    # slots); BalsamExecutor cancels its launcher's claimed tasks too.
    slack = workers + 1 if kind == "process" else 1
    assert len(cancelled) >= total - workers - slack, cancelled
    for i, f in enumerate(futures):
        assert f.done()
        if i not in cancelled:
            assert f.result(timeout=0) == i
    # A cancelled task never started.  (With tasks this long the launcher holds no claimed
    # task beyond those it runs; with short ones it may still start one it had claimed before
    # the cancel, and kill it at its next round trip.)
    assert [i for i in cancelled if markers[i].exists()] == []


def test_cancel_returns_true_for_a_queued_task(new_executor, tmp_path):
    ex = new_executor(max_workers=1)
    marker = tmp_path / "started"
    running = ex.submit(mark_then_sleep, str(marker), 1.0, "ran")
    queued = [ex.submit(identity, i) for i in range(8)]
    wait_until(marker.exists, "the first task did not start")
    time.sleep(0.2)  # the launcher may claim (CLAIMED) what it will run next meanwhile
    # ProcessPoolExecutor moved the first queued ones to its call queue (max_workers + 1 slots,
    # and the running task left one): it cannot cancel those.
    assert [f.cancel() for f in queued[3:]] == [True] * 5
    assert all(f.cancelled() for f in queued[3:])
    assert running.result(timeout=RESULT_TIMEOUT_S) == "ran"


@balsam_only
def test_balsam_claimed_tasks_are_cancelled_too(new_executor):
    from balsam_futures.backends import LauncherInfo

    ex = new_executor(launcher=False)
    futures = [ex.submit(identity, i) for i in range(4)]
    ex.flush()
    # A launcher elsewhere claims two of them (CLAIMED) but has not started them.
    lid = ex.store.register_launcher(LauncherInfo("elsewhere", 1))
    claimed = [t.id for t in ex.store.claim(lid, 2)]
    assert ex.store.count_by_state() == {"CLAIMED": 2, "READY": 2}
    first = next(f for f in futures if f.task_id == claimed[0])
    assert first.cancel() is True
    ex.shutdown(wait=True, cancel_futures=True)  # returns: nothing is left to wait for
    assert all(f.cancelled() for f in futures)


@balsam_only
def test_balsam_a_run_that_began_is_running_in_the_store(new_executor, tmp_path):
    """A run not known to be short reaches its worker only after its start is committed:
    the moment it has begun, the store says RUNNING and cancel() says False, as a
    ProcessPoolExecutor's running call does (a cancel in between once returned True and the
    launcher then killed the run).  The test holds the store's write lock from the task's
    claim on, so that a start written after the run began would be seen."""
    import sqlite3

    ex = new_executor(max_workers=1)
    db = ex.store.engine.url.database
    for k in range(5):  # a new kind each time: the first run of each is not known short
        marker = tmp_path / f"started-{k}"
        fut = ex.options(name=f"first-{k}").submit(mark_then_sleep, str(marker), 0.3, k)
        lock = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            deadline = time.monotonic() + RESULT_TIMEOUT_S
            while lock.execute("SELECT state FROM bf_tasks WHERE id = ?",
                               (fut.task_id,)).fetchone()[0] == "READY":
                assert time.monotonic() < deadline, "the task was not claimed"
            lock.execute("BEGIN IMMEDIATE")  # the launcher cannot write until released
            time.sleep(0.2)
            state = lock.execute("SELECT state FROM bf_tasks WHERE id = ?",
                                 (fut.task_id,)).fetchone()[0]
            assert not marker.exists() or state == "RUNNING", state
        finally:
            lock.close()
        wait_until(marker.exists, "the task did not start")
        assert fut.cancel() is False
        assert fut.result(timeout=RESULT_TIMEOUT_S) == k


# -- 4. no references kept ----------------------------------------------------------------------


def test_no_stale_references_to_arguments(new_executor):
    # CPython's test_no_stale_references: a discarded future does not keep its callable's
    # object alive.
    ex = new_executor()
    obj = Payload()
    collected = threading.Event()
    ref = weakref.ref(obj, lambda _ref: collected.set())
    ex.submit(obj.method)
    del obj
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while not collected.wait(0.05):
        gc.collect()
        assert time.monotonic() < deadline, "stale reference to the argument"
    assert ref() is None


def test_no_stale_references_to_a_done_future(new_executor):
    ex = new_executor()
    arg = Payload()
    arg_ref = weakref.ref(arg)
    fut = ex.submit(identity, arg)
    del arg
    result_ref = weakref.ref(fut.result(timeout=RESULT_TIMEOUT_S))
    fut_ref = weakref.ref(fut)
    made = ex.submit(make_payload)
    made_ref = weakref.ref(made.result(timeout=RESULT_TIMEOUT_S))
    del fut, made
    # The future and the result of the last one may be held until the watcher's next pass.
    deadline = time.monotonic() + 5.0
    while fut_ref() is not None or result_ref() is not None or made_ref() is not None:
        gc.collect()
        assert time.monotonic() < deadline, (fut_ref(), result_ref(), made_ref())
        time.sleep(0.05)
    assert arg_ref() is None


# -- 5. a failing initializer -------------------------------------------------------------------


def test_failing_initializer_breaks_the_executor(new_executor):
    # CPython's test_initializer, failing case.
    ex = new_executor(initializer=raise_in_initializer)
    try:
        fut = ex.submit(identity, 1)
    except BrokenExecutor:
        pass  # already broken
    else:
        with pytest.raises(BrokenExecutor):
            fut.result(timeout=RESULT_TIMEOUT_S)
    # At some point (here: within a second of the future raising) the executor breaks, and
    # from then on submit() raises.
    deadline = time.monotonic() + 1.0
    while True:
        try:
            ex.submit(identity, 2).cancel()
        except BrokenExecutor as exc:
            error = exc
            break
        assert time.monotonic() < deadline, "the executor did not break"
        time.sleep(POLL_S)
    if isinstance(ex, BalsamExecutor):
        assert "error in initializer" in str(error)


def test_failing_initializer_fails_pending_futures(new_executor):
    ex = new_executor(max_workers=1, initializer=raise_in_initializer)
    futures = [ex.submit(identity, i) for i in range(10)]
    for f in futures:
        with pytest.raises(BrokenExecutor):
            f.result(timeout=RESULT_TIMEOUT_S)
    with pytest.raises(BrokenExecutor):
        ex.submit(identity, 0)
    ex.shutdown(wait=True)  # returns: nothing is left to wait for


@balsam_only
def test_balsam_failing_initializer_stops_its_launcher(new_executor):
    broken = new_executor(initializer=raise_in_initializer)
    with pytest.raises(BrokenExecutor):
        broken.submit(identity, 1).result(timeout=RESULT_TIMEOUT_S)
    # Its launcher is gone: it does not take (and fail) the tasks of another executor of the
    # same site, which wait for a launcher instead.
    other = new_executor(launcher=False)
    fut = other.submit(identity, 2)
    time.sleep(1.0)
    assert not fut.done()
    assert other.store.count_by_state().get("READY", 0) == 1


# -- 6. map of a ShellApp -----------------------------------------------------------------------


def echo_app(kind):
    """``echo {x}`` as a ShellApp (BalsamExecutor) or as the same command run by a callable
    (ProcessPoolExecutor), each returning what the command printed."""
    if kind == "process":
        return echo_value
    return ShellApp("echo {x}", postprocess=job_out_last_line)


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_of_a_shell_app_keeps_order(new_executor, kind, chunksize):
    ex = new_executor()
    values = list(range(8))
    assert list(ex.map(echo_app(kind), values, chunksize=chunksize)) == [str(v) for v in values]


def test_map_of_a_shell_app_times_out(new_executor, kind, gate):
    ex = new_executor()
    if kind == "process":
        results = ex.map(echo_after_gate, ["late"], [gate.path], timeout=0.2)
    else:
        app = ShellApp("""sh -c 'while [ ! -e "$0" ]; do sleep 0.01; done; echo "$1"' {gate} {x}""",
                       postprocess=job_out_last_line)
        results = ex.map(app, [{"x": "late", "gate": gate.path}], timeout=0.2)
    with pytest.raises(TimeoutError):
        next(results)
    gate.open()


def test_map_of_a_shell_app_refuses_chunksize_below_one(new_executor, kind):
    ex = new_executor()
    with pytest.raises(ValueError):
        ex.map(echo_app(kind), [1], chunksize=0)


@balsam_only
def test_balsam_map_of_a_shell_app_takes_mappings_of_parameters(new_executor):
    ex = new_executor()
    two = ShellApp("echo {a} {b}", postprocess=job_out_last_line)
    assert list(ex.map(two, [{"a": 1, "b": "x"}, {"b": "y", "a": 2}])) == ["1 x", "2 y"]
    one = ShellApp("echo {x}", postprocess=job_out_last_line)
    assert list(ex.map(one, ["v", {"x": "w"}])) == ["v", "w"]  # values, or mappings


@balsam_only
def test_balsam_map_of_a_shell_app_refuses_ambiguous_arguments(new_executor):
    ex = new_executor()
    two = ShellApp("echo {a} {b}")
    with pytest.raises(TypeError, match="mapping"):
        ex.map(two, [1, 2])
    with pytest.raises(TypeError, match="mapping"):
        ex.map(two, [1], [2])
    with pytest.raises(TypeError, match="unknown"):
        ex.map(two, [{"a": 1, "c": 2}])
    assert ex.tasks().count() == 0  # nothing stored
