"""`balsam-futures show ID --follow`: a running shell task's job.out, live, until it ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from balsam_futures import BalsamExecutor, ShellApp

pytestmark = pytest.mark.timeout(90)


def test_follow_prints_output_as_it_comes_and_stops_at_the_end(tmp_path):
    site = tmp_path / "site"
    gate = tmp_path / "gate"
    app = ShellApp("echo first-line; while [ ! -f {gate} ]; do sleep 0.02; done; "
                   "echo second-line")
    ex = BalsamExecutor(max_workers=1, site=str(site))
    follower = None
    try:
        fut = ex.submit(app, gate=str(gate))
        follower = subprocess.Popen(
            [sys.executable, "-m", "balsam_futures", "show", "--site", str(site),
             "--follow", "--interval", "0.05", str(fut.task_id)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in follower.stdout:  # the first line arrives while the task still runs
            seen.append(line)
            if "first-line" in line:
                break
        assert not fut.done() and "first-line" in "".join(seen), seen
        gate.touch()
        rest, _ = follower.communicate(timeout=60)
        assert follower.returncode == 0, rest
        assert "second-line" in rest and "JOB_FINISHED" in rest
        fut.result(timeout=30)  # and the task itself succeeded
    finally:
        gate.touch()
        if follower is not None and follower.poll() is None:
            follower.kill()
        ex.shutdown(wait=True)


def test_follow_of_a_python_task_run_by_its_executor_says_where_its_output_went(tmp_path):
    site = tmp_path / "site"
    with BalsamExecutor(max_workers=1, site=str(site)) as ex:
        fut = ex.submit(abs, -1)
        assert fut.result(timeout=30) == 1
    out = subprocess.run([sys.executable, "-m", "balsam_futures", "show", "--site", str(site),
                          "--follow", str(fut.task_id)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "wrote no job.out" in out.stdout and "JOB_FINISHED" in out.stdout


def test_follow_prints_a_python_task_job_out_of_another_launcher(tmp_path):
    import os

    from balsam_futures.launcher.child import worker_python_path

    site = tmp_path / "site"
    with BalsamExecutor(site=str(site), launcher=False) as ex:
        fut = ex.submit(print, "hello from the task")
        ex.flush()
        subprocess.run([sys.executable, "-m", "balsam_futures", "launcher", "--site",
                        str(site), "-n", "1", "--idle-timeout", "1"], check=True,
                       capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": worker_python_path()})
        fut.result(timeout=10)
    out = subprocess.run([sys.executable, "-m", "balsam_futures", "show", "--site", str(site),
                          "--follow", str(fut.task_id)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "hello from the task" in out.stdout and "JOB_FINISHED" in out.stdout
