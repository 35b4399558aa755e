"""The balsam-futures command line, through click's CliRunner (in process)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from balsam_futures.backends import LauncherInfo, TaskOutcome, open_store
from balsam_futures.cli import main
from balsam_futures.serialization import dump_exception
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def site(tmp_path):
    """A site with 3 READY tasks tagged exp=a, and 2 FAILED ones tagged exp=b."""
    path = tmp_path / "site"
    assert CliRunner().invoke(main, ["init", str(path)]).exit_code == 0
    store = open_store(f"sqlite:///{path / 'balsam.db'}")
    store.create_tasks([TaskSpec("python", b"p", TaskOptions(tags={"exp": "a"}), f"ok{i}")
                        for i in range(3)])
    failed = store.create_tasks([TaskSpec("python", b"p", TaskOptions(tags={"exp": "b"}),
                                          "bad") for _ in range(2)])
    lid = store.register_launcher(LauncherInfo("h", 1))
    for task in store.claim(lid, 10, tags={"exp": "b"}):
        err = dump_exception(ValueError("bad input 7"), f"Task {task.id}")
        store.record_outcomes(lid, [TaskOutcome(
            task.id, outcome_path(TaskState.RUN_ERROR, 0, 0, True), error=err,
            message="the task raised an exception")])
    store.close()
    return path, failed


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_ls_filters_counts_and_json(site):
    path, failed = site
    code, out = run("ls", "--site", path)
    assert code == 0 and out.count("READY") == 3 and out.count("FAILED") == 2
    code, out = run("ls", "--site", path, "--state", "FAILED", "--json")
    assert code == 0 and sorted(t["id"] for t in json.loads(out)) == failed
    code, out = run("ls", "--site", path, "--by-states", "--json")
    assert json.loads(out) == {"READY": 3, "FAILED": 2}
    code, out = run("ls", "--site", path, "--tag", "exp=a", "--limit", "2")
    assert out.count("READY") == 2


def test_ls_history_and_show(site):
    path, failed = site
    code, out = run("ls", "--site", path, "--state", "FAILED", "--history")
    assert code == 0 and "RUN_ERROR" in out and "the task raised an exception" in out
    code, out = run("show", "--site", path, failed[0])
    assert code == 0 and "FAILED" in out and "bad input 7" in out and "history:" in out


def test_ls_history_json_gives_each_task_its_history(site):
    path, failed = site
    code, out = run("ls", "--site", path, "--history", "--json")
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)}
    store = open_store(f"sqlite:///{path / 'balsam.db'}")
    try:
        assert all(rows[i]["history"] == store.history(i) for i in rows)
    finally:
        store.close()
    assert rows[failed[0]]["history"][-1]["to_state"] == "FAILED"
    assert [r for r in rows.values() if r["state"] == "READY"][0]["history"] == []
    assert list(rows[failed[0]])[-1] == "history" and "result" not in rows[failed[0]]


def test_retry_kill_rm_modify(site):
    path, failed = site
    assert run("retry", "--site", path, "--state", "FAILED")[1] == "retry: 2 task(s)\n"
    assert run("ls", "--site", path, "--by-states", "--json")[1].strip() == \
        json.dumps({"READY": 3, "RESTART_READY": 2})
    assert run("modify", "--site", path, failed[0], "priority=7")[0] == 0
    code, out = run("ls", "--site", path, "--id", failed[0], "--json")
    assert json.loads(out)[0]["priority"] == 7
    assert run("kill", "--site", path, "--tag", "exp=a")[1] == "kill: 3 task(s)\n"
    assert run("rm", "--site", path, "--state", "CANCELLED")[1] == "rm: 3 task(s)\n"
    assert json.loads(run("ls", "--site", path, "--by-states", "--json")[1]) == \
        {"RESTART_READY": 2}


@pytest.mark.parametrize("args, message", [
    (["ls", "--state", "DONE"], "unknown task state 'DONE'"),
    (["show", "999"], "no task 999"),
    (["modify", "1", "payload=x"], "cannot modify 'payload'"),
    (["modify", "1", "priority=high"], "priority must be an integer"),
    (["retry"], "needs a filter"),
    (["ls", "--tag", "oops"], "is not KEY=VALUE"),
])
def test_user_mistakes_get_one_clear_line(site, args, message):
    path, _ = site
    code, out = run(*args[:1], "--site", path, *args[1:])
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_env_prints_the_activation_line(tmp_path):
    code, out = run("env", tmp_path / "s")
    assert code == 0 and out.startswith("export BALSAM_FUTURES_SITE=")


def test_ls_watch_returns_at_once_when_every_task_is_final(site):
    path, _ = site
    code, out = run("ls", "--site", path, "--tag", "exp=b", "--watch")
    assert code == 0 and "2/2 done, 2 failed" in out and "FAILED" in out


def test_ls_watch_follows_tasks_until_they_end(site):
    import subprocess
    import sys

    path, _ = site
    watcher = subprocess.Popen(
        [sys.executable, "-m", "balsam_futures", "ls", "--site", str(path), "--tag", "exp=a",
         "--watch", "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            watcher.wait(timeout=1.0)  # 3 READY tasks: still watching
        assert run("kill", "--site", path, "--tag", "exp=a")[0] == 0
        out, _ = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0
    assert "3/3 done" in out and "CANCELLED" in out


def test_show_of_a_shell_task_gives_its_command_workdir_and_output(make_executor, site_dir):
    from balsam_futures import ShellApp, ShellTaskError

    ex = make_executor(max_workers=1)
    app = ShellApp("echo hello {who}; exit {code}")
    ok = ex.submit(app, who="world", code=0)
    bad = ex.submit(app, who="moon", code=3)
    ok.result(timeout=30)
    with pytest.raises(ShellTaskError):
        bad.result(timeout=30)
    code, out = run("show", "--site", site_dir, ok.task_id)
    assert code == 0
    assert "echo hello world; exit 0" in out  # the command, as the description
    assert "working directory" in out and "hello world" in out
    code, out = run("show", "--site", site_dir, bad.task_id)
    assert code == 0 and "hello moon" in out and "FAILED" in out
