"""A launcher's life: the end of its wall time, and what it leaves for the next one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from balsam_futures import BalsamExecutor

pytestmark = pytest.mark.timeout(90)


def sleep_then_return(seconds):
    time.sleep(seconds)
    return seconds


def test_wall_time_stops_runs_as_run_timeout_and_requeues_them(site_dir):
    from balsam_futures.launcher.child import worker_python_path

    with BalsamExecutor(site=site_dir, launcher=False) as ex:
        long_run = ex.submit(sleep_then_return, 120)
        too_long = ex.options(timeout=3600).submit(sleep_then_return, 0)
        short = ex.options(timeout=1).submit(sleep_then_return, 0)
        ex.flush()
        start = time.monotonic()
        # 0.05 min = 3 s of wall time, less its grace (10 %): it stops by itself.
        out = subprocess.run(
            [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site_dir),
             "-n", "2", "--wall-time-min", "0.05"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": worker_python_path()})
        elapsed = time.monotonic() - start
        assert out.returncode == 0, out.stderr
        assert "wall time of 0.05 min over" in out.stderr
        assert elapsed < 20
        assert short.result(timeout=10) == 0
        states = {r["id"]: r["state"] for r in ex.tasks()}
        # The run still going at the end: RUN_TIMEOUT, then retried (auto_timeout_retry).
        assert states[long_run.task_id] == "RESTART_READY"
        history = [h["to_state"] for h in ex.store.history(long_run.task_id)]
        assert history[-2:] == ["RUN_TIMEOUT", "RESTART_READY"]
        # A task whose own wall time could not fit was never claimed.
        assert states[too_long.task_id] == "READY"
        ex.cancel_pending()


def test_sigterm_stops_runs_as_run_timeout_and_requeues_them(site_dir):
    from balsam_futures.launcher.child import worker_python_path

    with BalsamExecutor(site=site_dir, launcher=False) as ex:
        long_run = ex.submit(sleep_then_return, 120)
        ex.flush()
        launcher = subprocess.Popen(
            [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site_dir),
             "-n", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": worker_python_path()})
        try:
            deadline = time.monotonic() + 30
            while next(iter(ex.tasks()))["state"] != "RUNNING":
                assert time.monotonic() < deadline, "the task never started"
                time.sleep(0.05)
            launcher.terminate()  # what a batch system does at the end of a job
            out, _ = launcher.communicate(timeout=30)
        finally:
            if launcher.poll() is None:
                launcher.kill()
        assert launcher.returncode == 0, out
        history = ex.store.history(long_run.task_id)
        assert [h["to_state"] for h in history][-2:] == ["RUN_TIMEOUT", "RESTART_READY"]
        assert "the launcher received SIGTERM" in history[-2]["message"]
        ex.cancel_pending()
