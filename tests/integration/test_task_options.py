"""Per-task options that change where and how a Python task runs."""

from __future__ import annotations

import os

import pytest

from balsam_futures import ShellApp, TaskOptions, current_task

pytestmark = pytest.mark.timeout(60)


def where_am_i():
    with open("made-here.txt", "w") as f:
        f.write("x")
    return os.getcwd(), current_task().workdir


def test_python_task_runs_in_its_working_directory(make_executor, site_dir, tmp_path):
    ex = make_executor(max_workers=1)
    cwd, reported = ex.options(workdir="runs/a").submit(where_am_i).result(timeout=30)
    assert cwd == reported == str(site_dir.resolve() / "data" / "runs" / "a")
    assert (site_dir / "data" / "runs" / "a" / "made-here.txt").exists()
    absolute = tmp_path / "elsewhere"
    cwd, _ = ex.options(workdir=str(absolute)).submit(where_am_i).result(timeout=30)
    assert cwd == str(absolute)
    # Without the option the next task is back in the worker's own directory.
    assert ex.submit(os.getcwd).result(timeout=30) == os.getcwd()


def test_shell_task_uses_the_workdir_option(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    result = ex.options(workdir=str(tmp_path / "shell")).submit(ShellApp("pwd")).result(30)
    assert result.workdir == tmp_path / "shell"
    assert str(tmp_path / "shell") in result.tail()


def test_workdir_option_is_checked():
    with pytest.raises(ValueError, match=r"\.\."):
        TaskOptions(workdir="../escape")
    with pytest.raises(TypeError, match="workdir"):
        TaskOptions(workdir=3)


def test_multi_node_task_on_the_local_launcher_is_refused_at_submit(make_executor):
    from balsam_futures import Resources

    ex = make_executor(max_workers=1)
    with pytest.raises(ValueError, match="needs 2 nodes.*launcher=False"):
        ex.options(resources=Resources(num_nodes=2)).submit(os.getpid)
    assert ex.store.count_by_state() == {}
