"""A Python task run by a launcher that is not its executor's own child writes what it
prints to ``job.out`` in its working directory, as a shell task does; under the executor's
own launcher it prints to the executor's terminal (tests/integration/test_ppe_parity.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from balsam_futures import BalsamExecutor, ShellApp
from balsam_futures.launcher.child import worker_python_path

pytestmark = pytest.mark.timeout(90)


def chatty(x):
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    os.system(f"echo child {x}")  # what a command it starts prints goes there too
    return x


def test_python_tasks_of_another_launcher_write_job_out(site_dir, tmp_path):
    with BalsamExecutor(site=site_dir, launcher=False) as ex:
        own = ex.options(workdir=str(tmp_path / "mine")).submit(chatty, 1)
        default = ex.submit(chatty, 2)
        shell = ShellApp("echo shell {x}", name="say")
        said = ex.submit(shell, x=3)
        ex.flush()
        out = subprocess.run(
            [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site_dir),
             "-n", "1", "--idle-timeout", "1"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": worker_python_path()})
        assert out.returncode == 0, out.stderr
        assert own.result(timeout=10) == 1
        assert default.result(timeout=10) == 2
        said.result(timeout=10)
        assert "out 1" not in out.stdout + out.stderr  # not on the launcher's terminal
    text = (tmp_path / "mine" / "job.out").read_text()
    assert "out 1" in text and "err 1" in text and "child 1" in text
    [path] = list((site_dir / "data" / "default").glob(f"chatty_{default.task_id}/job.out"))
    assert "out 2" in path.read_text() and "out 1" not in path.read_text()
    # A shell task's job.out is its own (a header line per run, then the command's output).
    shell_out = list((site_dir / "data").rglob(f"say_{said.task_id}/job.out"))
    assert [p.read_text().strip().splitlines()[-1] for p in shell_out] == ["shell 3"]
