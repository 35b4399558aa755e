"""Killing running tasks: the whole process group stops within about a second, the task ends
KILLED with a history entry, and its future raises TaskKilled."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time

import pytest
from processes import alive, wait_for_file

from balsam_futures import TaskKilled

pytestmark = pytest.mark.timeout(60)


def started_then_sleep(marker, child_pid_file=None):
    if child_pid_file:
        child = subprocess.Popen(["sleep", "60"])
        with open(child_pid_file, "w") as f:
            f.write(str(child.pid))
    open(marker, "w").close()
    time.sleep(60)
    return "not killed"


def test_future_kill_stops_a_running_task_and_its_children(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    marker, pid_file = tmp_path / "started", tmp_path / "child.pid"
    fut = ex.submit(started_then_sleep, str(marker), str(pid_file))
    wait_for_file(marker)
    child = int(pid_file.read_text())
    assert alive(child)
    t0 = time.monotonic()
    assert fut.kill() is True
    with pytest.raises(TaskKilled, match="killed"):
        fut.result(timeout=10)
    elapsed = time.monotonic() - t0
    print(f"\nkilled in {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0
    deadline = time.monotonic() + 5
    while alive(child):
        assert time.monotonic() < deadline, "the task's child process survived the kill"
        time.sleep(0.01)
    history = ex.store.history(fut.task_id)
    assert [h["to_state"] for h in history][-2:] == ["RUNNING", "KILLED"]
    assert "killed" in history[-1]["message"]
    # The launcher carries on with a fresh worker.
    assert ex.submit(os.getpid).result(timeout=10) > 0


def test_kill_by_id_and_kill_of_pending_task_cancels_it(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    marker = tmp_path / "started"
    running = ex.submit(started_then_sleep, str(marker))
    wait_for_file(marker)
    queued = [ex.submit(started_then_sleep, str(tmp_path / f"q{i}")) for i in range(4)]
    last = queued[-1]
    assert ex.flush(timeout=10)  # stored, so they have ids
    try:
        affected = ex.kill([running.task_id, last])
    except BaseException:
        ex.kill(queued)
        raise
    assert running.task_id in affected and last.task_id in affected
    assert last.cancelled()
    with pytest.raises(TaskKilled):
        running.result(timeout=10)
    assert ex.store.get_tasks([last.task_id])[0]["state"] == "CANCELLED"
    ex.kill(queued)  # the rest: cancelled or killed, none left to run a minute each


def test_kill_before_the_task_is_stored_withdraws_it(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    marker = tmp_path / "started"
    running = ex.submit(started_then_sleep, str(marker))
    wait_for_file(marker)
    fut = ex.submit(started_then_sleep, str(tmp_path / "never"))
    assert fut.kill() is True  # stored or not, it never runs
    assert fut.cancelled()
    assert running.kill() is True
    with pytest.raises(TaskKilled):
        running.result(timeout=10)


def test_kill_of_a_finished_task_changes_nothing(make_executor):
    ex = make_executor(max_workers=1)
    fut = ex.submit(os.getpid)
    fut.result(timeout=10)
    assert fut.kill() is False
    assert ex.kill([fut.task_id]) == []
    assert ex.store.get_tasks([fut.task_id])[0]["state"] == "JOB_FINISHED"


def test_cancel_and_kill_by_filter(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    marker = tmp_path / "started"
    running = ex.options(tags={"batch": "b1"}).submit(started_then_sleep, str(marker))
    wait_for_file(marker)
    pending = [ex.options(tags={"batch": "b1"}).submit(started_then_sleep, str(tmp_path / f"p{i}"))
               for i in range(3)]
    other = ex.options(tags={"batch": "b2"}).submit(os.getpid)
    assert ex.flush(timeout=10)
    assert ex.tasks().filter(tags={"batch": "b1"}, state="READY").cancel() == 3
    assert ex.tasks().filter(tags={"batch": "b1"}).kill() == 1  # only the running one is left
    with pytest.raises(TaskKilled):
        running.result(timeout=10)
    done, _ = concurrent.futures.wait(pending, timeout=10)  # the watcher sees the store
    assert done == set(pending) and all(f.cancelled() for f in pending)
    assert other.result(timeout=10) > 0
    assert ex.tasks().filter(tags={"batch": "b1"}).by_state() == {"CANCELLED": 3, "KILLED": 1}
