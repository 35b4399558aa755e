"""Errors and faults of ``BalsamExecutor``: where each failure surfaces, and what the store keeps.

Bad input raises at the call that received it (``submit`` or the constructor) and leaves nothing
behind: no task row, no launcher process.  Failures around a task (a crashed worker, a wall-time
limit, a broken initializer, a result or exception the master cannot unpickle, a killed launcher)
each come back as their own ``balsam_futures`` error, and the task's row and history in the store
tell the same story, also after the master is gone.

Tasks run in other processes, so they are synchronised with files in ``tmp_path``: a task blocked
on a gate polls for the gate file (every 5 ms, for at most GATE_BOUND_S), and the test creates it
to release the task.  Gates are opened at teardown, before the executors are shut down.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from gated import GATE_BOUND_S, POLL_S, signal_then_wait_for_gate, wait_for_gate

import balsam_futures
from balsam_futures import BalsamExecutor, TaskState
from balsam_futures.backends import open_store

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test environment
    psutil = None

pytestmark = pytest.mark.timeout(90)

RESULT_TIMEOUT_S = 30.0

S = TaskState
DONE_PATH = [S.CLAIMED, S.RUNNING, S.RUN_DONE, S.JOB_FINISHED]
ERROR_PATH = [S.CLAIMED, S.RUNNING, S.RUN_ERROR, S.FAILED]


# --------------------------------------------------------------------------------------------
# Module-level task functions (workers import them from this module).
# --------------------------------------------------------------------------------------------


class InitializerFailure(Exception):
    pass


def identity(x):
    return x


def exit_process(code):
    os._exit(code)


def kill_own_process():
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(GATE_BOUND_S)  # not reached


def sleep_long():
    time.sleep(GATE_BOUND_S)
    return "slept"


def slow_on_first_attempt(marker):
    """Sleeps past any short timeout on its first run only (the marker remembers that run)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        time.sleep(GATE_BOUND_S)
        return "first attempt"
    return "second attempt"


def start_child_then_sleep(pid_file):
    child = subprocess.Popen(["sleep", "60"])
    tmp = pid_file + ".tmp"
    Path(tmp).write_text(str(child.pid))
    os.replace(tmp, pid_file)
    time.sleep(GATE_BOUND_S)
    return "slept"


def flaky(counter_file, failures):
    """Fails on its first ``failures`` runs, then returns the number of runs."""
    runs = int(Path(counter_file).read_text()) if os.path.exists(counter_file) else 0
    runs += 1
    Path(counter_file).write_text(str(runs))
    if runs <= failures:
        raise ValueError(f"flaky failure number {runs}")
    return runs


def failing_initializer(message):
    raise InitializerFailure(message)


def return_worker_only_object(module_dir, module_name):
    sys.path.insert(0, module_dir)
    module = importlib.import_module(module_name)
    return module.WorkerOnlyThing(7)


def raise_worker_only_error(module_dir, module_name, message):
    sys.path.insert(0, module_dir)
    module = importlib.import_module(module_name)
    raise module.WorkerOnlyError(message)


# --------------------------------------------------------------------------------------------
# Test-side helpers and fixtures.
# --------------------------------------------------------------------------------------------


def wait_until(predicate, timeout=RESULT_TIMEOUT_S, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(POLL_S)


def wait_for_path(path, timeout=RESULT_TIMEOUT_S):
    wait_until(lambda: os.path.exists(path), timeout, f"{path} created")


def history_states(store, task_id):
    return [TaskState(row["to_state"]) for row in store.history(task_id)]


def task_state(store, task_id):
    (row,) = store.get_tasks([task_id])
    return TaskState(row["state"])


def _proc_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; the fields after it are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def child_pids(pid):
    """Direct children of ``pid`` (psutil if installed, else a /proc scan)."""
    if psutil is not None:
        try:
            return {c.pid for c in psutil.Process(pid).children()}
        except psutil.NoSuchProcess:
            return set()
    return {int(d) for d in os.listdir("/proc") if d.isdigit() and _proc_ppid(int(d)) == pid}


def cmdline(pid):
    if psutil is not None:
        try:
            return " ".join(psutil.Process(pid).cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return ""
    return _proc_cmdline(pid)


def launcher_processes():
    """Live launcher processes that are children of this test process."""
    return {pid for pid in child_pids(os.getpid())
            if "balsam_futures.launcher" in cmdline(pid) and not is_gone(pid)}


def is_gone(pid):
    """True once ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    if psutil is not None:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def worker_only_module(tmp_path):
    """A module importable only where its directory is put on sys.path (never in this process)."""
    module_dir = tmp_path / "worker_only"
    module_dir.mkdir()
    name = f"bf_worker_only_{uuid.uuid4().hex}"
    (module_dir / f"{name}.py").write_text(textwrap.dedent("""
        class WorkerOnlyThing:
            def __init__(self, value):
                self.value = value


        class WorkerOnlyError(Exception):
            pass
    """))
    assert importlib.util.find_spec(name) is None
    yield str(module_dir), name
    assert name not in sys.modules


def warm_up(ex):
    assert ex.submit(identity, "warm").result(timeout=RESULT_TIMEOUT_S) == "warm"


# --------------------------------------------------------------------------------------------
# Bad input raises where it was given, and leaves nothing behind.
# --------------------------------------------------------------------------------------------


def test_unpicklable_callable_raises_at_submit_and_stores_nothing(make_executor):
    ex = make_executor()
    warm_up(ex)
    ex.flush()
    before = ex.store.count_by_state()
    lock = threading.Lock()
    with pytest.raises(balsam_futures.PayloadError, match="callable") as info:
        ex.submit(lambda: lock.locked())
    assert isinstance(info.value, TypeError)
    ex.flush()
    assert ex.store.count_by_state() == before == {"JOB_FINISHED": 1}


def test_unpicklable_argument_raises_at_submit_and_stores_nothing(make_executor):
    ex = make_executor()
    warm_up(ex)
    ex.flush()
    before = ex.store.count_by_state()
    with pytest.raises(balsam_futures.PayloadError, match="arguments") as info:
        ex.submit(identity, threading.Lock())
    assert isinstance(info.value, TypeError)
    ex.flush()
    assert ex.store.count_by_state() == before == {"JOB_FINISHED": 1}
    assert ex.submit(identity, 5).result(timeout=RESULT_TIMEOUT_S) == 5


@pytest.mark.parametrize("max_workers", [0, -1])
def test_invalid_max_workers_raises_from_constructor(site_dir, max_workers):
    before = launcher_processes()
    with pytest.raises(ValueError, match="max_workers"):
        BalsamExecutor(max_workers=max_workers, site=site_dir)
    assert launcher_processes() - before == set()


def test_submit_after_shutdown_raises_runtime_error(make_executor):
    ex = make_executor()
    ex.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(identity, 1)


def test_site_that_is_a_regular_file_raises_site_error(tmp_path):
    site = tmp_path / "not_a_dir"
    site.write_text("I am a file\n")
    before = launcher_processes()
    with pytest.raises(balsam_futures.SiteError, match="not a directory"):
        BalsamExecutor(max_workers=1, site=site)
    assert launcher_processes() - before == set()
    assert site.read_text() == "I am a file\n"


def test_database_that_is_a_text_file_raises_schema_mismatch(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    db = site / "balsam.db"
    db.write_text("these are my notes, not a database\n" * 50)
    before = launcher_processes()
    with pytest.raises(balsam_futures.SchemaMismatch) as info:
        BalsamExecutor(max_workers=1, site=site)
    assert str(db) in str(info.value)
    assert launcher_processes() - before == set()
    assert db.read_text().startswith("these are my notes")


def test_database_with_newer_schema_raises_schema_mismatch(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    db = site / "balsam.db"
    open_store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE bf_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = launcher_processes()
    with pytest.raises(balsam_futures.SchemaMismatch, match="newer") as info:
        BalsamExecutor(max_workers=1, site=site)
    assert "99" in str(info.value)
    assert launcher_processes() - before == set()


# --------------------------------------------------------------------------------------------
# The store keeps every task's row and history after the master exits.
# --------------------------------------------------------------------------------------------

MASTER_SCRIPT = """
import json, math, sys
from balsam_futures import BalsamExecutor

with BalsamExecutor(max_workers=2, site=sys.argv[1]) as ex:
    ok = [ex.submit(pow, 2, n) for n in range(4)]
    bad = ex.submit(math.sqrt, -1)
print(json.dumps({"ok": [f.task_id for f in ok], "bad": bad.task_id,
                  "results": [f.result() for f in ok], "error": repr(bad.exception())}))
"""


def test_task_rows_and_history_survive_the_master(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-c", MASTER_SCRIPT, str(site)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["results"] == [1, 2, 4, 8]
    assert "math domain error" in out["error"]

    store = open_store(f"sqlite:///{site}/balsam.db")
    try:
        ids = out["ok"] + [out["bad"]]
        rows = {r["id"]: r for r in store.get_tasks(ids)}
        assert sorted(rows) == sorted(ids)
        for task_id, expected in zip(out["ok"], [1, 2, 4, 8]):
            assert rows[task_id]["state"] == "JOB_FINISHED"
            assert pickle.loads(rows[task_id]["result"]) == expected
            assert history_states(store, task_id) == DONE_PATH
        assert rows[out["bad"]]["state"] == "FAILED"
        assert rows[out["bad"]]["error"] is not None
        assert history_states(store, out["bad"]) == ERROR_PATH
        assert store.count_by_state() == {"JOB_FINISHED": 4, "FAILED": 1}
    finally:
        store.close()
    # The master's launcher stopped cleanly (not left to expire).
    with sqlite3.connect(site / "balsam.db") as conn:
        states = [r[0] for r in conn.execute("SELECT state FROM bf_launchers")]
    conn.close()
    assert states == ["STOPPED"]


# --------------------------------------------------------------------------------------------
# A worker that dies takes only its own task with it.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crash", "args", "how"),
    [
        pytest.param(exit_process, (7,), "exit code 7", id="os._exit"),
        pytest.param(kill_own_process, (), "SIGKILL", id="SIGKILL"),
    ],
)
def test_crashed_worker_fails_its_task_and_is_replaced(make_executor, crash, args, how):
    ex = make_executor(max_workers=1)
    first_pid = ex.submit(os.getpid).result(timeout=RESULT_TIMEOUT_S)
    before = [ex.submit(identity, i) for i in range(3)]
    crashed = ex.submit(crash, *args)
    after = [ex.submit(identity, i) for i in range(3, 6)]
    exc = crashed.exception(timeout=RESULT_TIMEOUT_S)
    assert isinstance(exc, balsam_futures.WorkerCrashed), repr(exc)
    assert exc.task_id == crashed.task_id
    assert f"task {crashed.task_id}" in str(exc)
    assert how in str(exc)
    assert [f.result(timeout=RESULT_TIMEOUT_S) for f in before + after] == list(range(6))
    later_pid = ex.submit(os.getpid).result(timeout=RESULT_TIMEOUT_S)
    assert later_pid != first_pid
    assert is_gone(first_pid)
    assert history_states(ex.store, crashed.task_id) == ERROR_PATH


# --------------------------------------------------------------------------------------------
# Wall-time limits.
# --------------------------------------------------------------------------------------------


def test_timeout_without_retry_raises_task_timeout(make_executor):
    ex = make_executor(max_workers=1)
    warm_up(ex)
    t0 = time.monotonic()
    fut = ex.options(timeout=0.5, max_retries=0, auto_timeout_retry=False).submit(sleep_long)
    exc = fut.exception(timeout=RESULT_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    assert isinstance(exc, balsam_futures.TaskTimeout), repr(exc)
    assert isinstance(exc, TimeoutError)
    assert exc.task_id == fut.task_id
    assert elapsed < 5, f"the 0.5 s timeout took {elapsed:.1f} s to surface"
    assert history_states(ex.store, fut.task_id) == [
        S.CLAIMED, S.RUNNING, S.RUN_TIMEOUT, S.FAILED]
    # The executor goes on with a fresh worker.
    assert ex.submit(identity, "after").result(timeout=RESULT_TIMEOUT_S) == "after"


def test_timeout_is_retried_automatically(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    marker = str(tmp_path / "first-attempt")
    fut = ex.options(timeout=2.0).submit(slow_on_first_attempt, marker)
    assert fut.result(timeout=RESULT_TIMEOUT_S) == "second attempt"
    assert history_states(ex.store, fut.task_id) == [
        S.CLAIMED, S.RUNNING, S.RUN_TIMEOUT, S.RESTART_READY,
        S.CLAIMED, S.RUNNING, S.RUN_DONE, S.JOB_FINISHED,
    ]
    (row,) = ex.store.get_tasks([fut.task_id])
    assert row["num_restarts"] == 1


def test_timeout_kills_the_tasks_child_processes(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    pid_file = str(tmp_path / "child.pid")
    fut = ex.options(timeout=2.0, auto_timeout_retry=False).submit(start_child_then_sleep,
                                                                     pid_file)
    wait_for_path(pid_file)
    child = int(Path(pid_file).read_text())
    try:
        assert not is_gone(child)
        exc = fut.exception(timeout=RESULT_TIMEOUT_S)
        assert isinstance(exc, balsam_futures.TaskTimeout), repr(exc)
        wait_until(lambda: is_gone(child), 10, f"child pid {child} gone")
    finally:
        kill_quietly(child)


# --------------------------------------------------------------------------------------------
# Retries.
# --------------------------------------------------------------------------------------------


def test_failing_task_is_retried_until_it_succeeds(make_executor, tmp_path):
    ex = make_executor()
    counter = str(tmp_path / "runs")
    fut = ex.options(max_retries=2).submit(flaky, counter, 2)
    assert fut.result(timeout=RESULT_TIMEOUT_S) == 3
    assert Path(counter).read_text() == "3"
    assert history_states(ex.store, fut.task_id) == [
        S.CLAIMED, S.RUNNING, S.RUN_ERROR, S.RESTART_READY,
        S.CLAIMED, S.RUNNING, S.RUN_ERROR, S.RESTART_READY,
        S.CLAIMED, S.RUNNING, S.RUN_DONE, S.JOB_FINISHED,
    ]


def test_retries_exhausted_raise_the_last_error(make_executor, tmp_path):
    ex = make_executor()
    counter = str(tmp_path / "runs")
    fut = ex.options(max_retries=1).submit(flaky, counter, 5)
    with pytest.raises(ValueError, match="flaky failure number 2"):
        fut.result(timeout=RESULT_TIMEOUT_S)
    assert history_states(ex.store, fut.task_id) == [
        S.CLAIMED, S.RUNNING, S.RUN_ERROR, S.RESTART_READY,
        S.CLAIMED, S.RUNNING, S.RUN_ERROR, S.FAILED,
    ]


# --------------------------------------------------------------------------------------------
# A failing initializer breaks every task.
# --------------------------------------------------------------------------------------------


def test_initializer_that_raises_fails_every_task(make_executor):
    ex = make_executor(max_workers=2, initializer=failing_initializer,
                       initargs=("no GPU here",))
    futures = [ex.submit(identity, i) for i in range(4)]
    for fut in futures:
        exc = fut.exception(timeout=RESULT_TIMEOUT_S)
        assert isinstance(exc, balsam_futures.WorkerInitError), repr(exc)
        assert isinstance(exc, concurrent.futures.BrokenExecutor)
        assert "InitializerFailure" in str(exc)
        assert exc.__cause__ is not None
        cause = str(exc.__cause__)
        assert "InitializerFailure" in cause
        assert "no GPU here" in cause


# --------------------------------------------------------------------------------------------
# launcher=False: tasks wait in the store for a launcher started elsewhere.
# --------------------------------------------------------------------------------------------


def test_tasks_without_launcher_wait_for_a_separate_launcher(make_executor, site_dir):
    ex = make_executor(launcher=False)
    futures = [ex.submit(pow, 3, n) for n in range(4)]
    ex.flush()
    assert ex.store.count_by_state() == {"READY": 4}
    done, not_done = concurrent.futures.wait(futures, timeout=0.3)
    assert done == set()
    assert ex.store.count_by_state() == {"READY": 4}

    # ``python -m balsam_futures`` is the ``balsam-futures`` command.
    launcher = subprocess.Popen(
        [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site_dir),
         "--workers", "2", "--idle-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert [f.result(timeout=RESULT_TIMEOUT_S) for f in futures] == [1, 3, 9, 27]
        assert ex.store.count_by_state() == {"JOB_FINISHED": 4}
        # With nothing left to do, it stops by itself after its idle timeout.
        out, _ = launcher.communicate(timeout=15)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == 0, out
    assert "finished 4 task(s)" in out


def test_separate_launcher_with_nothing_to_run_stops_after_idle_timeout(site_dir):
    launcher = subprocess.Popen(
        [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site_dir),
         "--workers", "1", "--idle-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = launcher.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        launcher.kill()
        out, _ = launcher.communicate()
        pytest.fail(f"a launcher with --idle-timeout 1 and an empty queue ran for 8 s:\n{out}")
    assert launcher.returncode == 0, out
    assert "finished 0 task(s)" in out


# --------------------------------------------------------------------------------------------
# A killed launcher breaks the executor, but its tasks are not lost.
# --------------------------------------------------------------------------------------------


def test_killed_launcher_breaks_futures_and_tasks_are_recovered(make_executor, new_gate,
                                                                tmp_path):
    gate = new_gate()
    ex = make_executor(max_workers=2)
    started = [str(tmp_path / f"started-{i}") for i in range(2)]
    futures = [ex.submit(signal_then_wait_for_gate, s, gate.path, i)
               for i, s in enumerate(started)]
    for s in started:
        wait_for_path(s)
    # Started, and RUNNING in the store (the launcher writes a start a little later).
    wait_until(lambda: all(f.running() for f in futures), RESULT_TIMEOUT_S,
               "both tasks RUNNING in the store")
    ids = [f.task_id for f in futures]
    assert [task_state(ex.store, i) for i in ids] == [S.RUNNING, S.RUNNING]

    launcher_pid = ex._launcher.pid
    workers = child_pids(launcher_pid)
    assert len(workers) == 2
    os.kill(launcher_pid, signal.SIGKILL)  # first, so it cannot record the workers' deaths
    for pid in workers:
        kill_quietly(pid)

    t0 = time.monotonic()
    for fut in futures:
        exc = fut.exception(timeout=10)
        assert isinstance(exc, balsam_futures.LauncherBroken), repr(exc)
        assert isinstance(exc, concurrent.futures.BrokenExecutor)
    assert time.monotonic() - t0 < 5
    with pytest.raises(balsam_futures.LauncherBroken):
        ex.submit(identity, 1)

    # The executor saw its launcher die and put its tasks back in the queue at once.
    assert [task_state(ex.store, i) for i in ids] == [S.RESTART_READY, S.RESTART_READY]
    assert time.monotonic() - t0 < 5

    gate.open()
    ex2 = make_executor(max_workers=2)  # same site, new launcher
    wait_until(lambda: all(task_state(ex2.store, i) is S.JOB_FINISHED for i in ids),
               what="requeued tasks finished under the new launcher")
    for task_id, expected in zip(ids, [0, 1]):
        (row,) = ex2.store.get_tasks([task_id])
        assert pickle.loads(row["result"]) == expected
        assert history_states(ex2.store, task_id) == [
            S.CLAIMED, S.RUNNING, S.RESTART_READY,
            S.CLAIMED, S.RUNNING, S.RUN_DONE, S.JOB_FINISHED,
        ]
    assert ex2.submit(identity, "new").result(timeout=RESULT_TIMEOUT_S) == "new"


# --------------------------------------------------------------------------------------------
# Cancellation is recorded in the store.
# --------------------------------------------------------------------------------------------


def test_cancelled_queued_task_is_cancelled_in_store(make_executor, gate, tmp_path):
    ex = make_executor(max_workers=1)
    started = str(tmp_path / "started")
    blocker = ex.submit(signal_then_wait_for_gate, started, gate.path, "blocker")
    wait_for_path(started)
    # The launcher claims a small backlog ahead of its workers, and a claimed task can no
    # longer be cancelled; behind several blocked tasks, the target is surely unclaimed.
    blocked = [ex.submit(wait_for_gate, gate.path, i) for i in range(6)]
    queued = ex.submit(identity, "never")
    ex.flush()
    assert task_state(ex.store, queued.task_id) is S.READY
    assert queued.cancel()
    assert queued.cancelled()
    assert task_state(ex.store, queued.task_id) is S.CANCELLED
    history = ex.store.history(queued.task_id)
    assert [TaskState(h["to_state"]) for h in history] == [S.CANCELLED]
    gate.open()
    assert blocker.result(timeout=RESULT_TIMEOUT_S) == "blocker"
    assert [f.result(timeout=RESULT_TIMEOUT_S) for f in blocked] == list(range(6))
    assert task_state(ex.store, queued.task_id) is S.CANCELLED
    assert ex.store.history(queued.task_id) == history


def test_shutdown_cancel_futures_leaves_no_task_pending(make_executor, gate, site_dir, tmp_path):
    ex = make_executor(max_workers=1)
    started = str(tmp_path / "started")
    blocker = ex.submit(signal_then_wait_for_gate, started, gate.path, "blocker")
    wait_for_path(started)
    # RUNNING in the store, not only started: a task still CLAIMED there may be cancelled
    # (claimed is not running), and on a loaded machine its start is written a little later.
    wait_until(blocker.running, RESULT_TIMEOUT_S, "the blocker RUNNING in the store")
    queued = [ex.submit(identity, i) for i in range(6)]
    ex.shutdown(wait=False, cancel_futures=True)
    gate.open()
    done, not_done = concurrent.futures.wait([blocker, *queued], timeout=RESULT_TIMEOUT_S)
    assert not_done == set()
    assert blocker.result() == "blocker"
    assert any(f.cancelled() for f in queued)

    store = open_store(f"sqlite:///{site_dir}/balsam.db")
    try:
        counts = store.count_by_state()
        assert set(counts) <= {"JOB_FINISHED", "CANCELLED"}, counts
        assert sum(counts.values()) == 7
        for fut in queued:
            expected = S.CANCELLED if fut.cancelled() else S.JOB_FINISHED
            assert task_state(store, fut.task_id) is expected
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# Results and exceptions that exist only on the worker side.
# --------------------------------------------------------------------------------------------


def test_result_that_cannot_be_unpickled_raises_payload_error(make_executor,
                                                              worker_only_module):
    module_dir, module_name = worker_only_module
    ex = make_executor()
    fut = ex.submit(return_worker_only_object, module_dir, module_name)
    exc = fut.exception(timeout=RESULT_TIMEOUT_S)
    assert isinstance(exc, balsam_futures.PayloadError), repr(exc)
    assert f"task {fut.task_id}" in str(exc)
    with pytest.raises(balsam_futures.PayloadError):
        fut.result(timeout=0)
    # The task itself succeeded; only this process cannot read its result.
    assert task_state(ex.store, fut.task_id) is S.JOB_FINISHED


def test_exception_that_cannot_be_unpickled_raises_remote_error(make_executor,
                                                                worker_only_module):
    module_dir, module_name = worker_only_module
    ex = make_executor()
    fut = ex.submit(raise_worker_only_error, module_dir, module_name, "only over there")
    exc = fut.exception(timeout=RESULT_TIMEOUT_S)
    assert isinstance(exc, balsam_futures.RemoteError), repr(exc)
    assert exc.task_id == fut.task_id
    assert exc.type_name == f"{module_name}.WorkerOnlyError"
    assert "only over there" in str(exc)
    assert "raise_worker_only_error" in exc.remote_traceback
    assert "only over there" in exc.remote_traceback
    assert f"Task {fut.task_id}" in exc.remote_traceback
    assert task_state(ex.store, fut.task_id) is S.FAILED
