"""Shell applications end to end: ``ex.submit(ShellApp(...), **params)`` through a real local
launcher and warm workers, with real subprocesses.

Each behaviour of ``balsam_futures.apps`` that the master can see is checked here: the result
and job.out, quoting (hostile values are one literal argument, with and without a shell),
submit-time checks that store nothing, exit codes and missing programs as their own errors,
the environment, working directories, inputs, hooks, retries, time-outs and kills.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import time

import pytest
from processes import alive

from balsam_futures import (
    ShellApp,
    ShellCommandNotFound,
    ShellInputNotFound,
    ShellResult,
    ShellTaskError,
    TaskFailed,
    TaskKilled,
    TaskTimeout,
    config,
)

pytestmark = pytest.mark.timeout(60)

RESULT_TIMEOUT_S = 30.0

#: Prints its arguments as one JSON line, so a test sees exactly what argv the program got.
ARGV_PRINTER = (shlex.quote(sys.executable)
                + " -c 'import json, sys; print(json.dumps(sys.argv[1:]))'").replace("{", "{{")

HOSTILE_VALUES = [
    "x; touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a'b\"c",
    "line1\ntouch PWNED",
    "'; touch PWNED; '",
    "* ?",
    "",
    "--help",
]


# -- hooks (module level: workers import them from this module) ------------------------------


class PreprocessFailed(ValueError):
    pass


def write_prepared(ctx):
    (ctx.workdir / "prepared.txt").write_text(f"prepared {ctx.params['word']} {ctx.task_id}\n")


def refuse(ctx):
    raise PreprocessFailed(f"no input for task {ctx.task_id}")


def summarize(ctx, result):
    return {"task_id": ctx.task_id, "code": result.return_code, "last": result.tail(1)}


def flaky_postprocess(ctx, result):
    counter = ctx.workdir / "attempts"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    if n == 1:
        raise RuntimeError("postprocess failed on the first run")
    return n


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# -- helpers ---------------------------------------------------------------------------------


def _last_json_line(result: ShellResult):
    return json.loads(result.tail(1))


def _wait_for_content(path, timeout=RESULT_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and (text := path.read_text()).endswith("\n"):
            return text
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


# -- tests -----------------------------------------------------------------------------------


def test_echo_with_params_gives_a_result_and_job_out(make_executor, site_dir):
    ex = make_executor(max_workers=2)
    app = ShellApp("echo {greeting} {n} {ratio:.2f} {flag}")
    fut = ex.submit(app, greeting="hello world", n=3, ratio=0.5, flag=True)
    result = fut.result(timeout=RESULT_TIMEOUT_S)
    assert isinstance(result, ShellResult)
    assert result.return_code == 0
    assert result.workdir == site_dir.absolute() / "data" / "default" / f"echo_{fut.task_id}"
    assert result.job_out == result.workdir / "job.out"
    text = result.job_out.read_text()
    assert text.startswith(f"# balsam_futures: task {fut.task_id} started")
    assert text.endswith("hello world 3 0.50 True\n")
    assert result.tail(1) == "hello world 3 0.50 True"
    row = ex.store.get_tasks([fut.task_id])[0]
    assert row["kind"] == "shell"
    assert row["name"] == "echo"
    assert row["state"] == "JOB_FINISHED"


@pytest.mark.parametrize("use_shell", [False, True], ids=["no-shell", "shell"])
def test_hostile_values_arrive_as_one_literal_argument(make_executor, tmp_path, monkeypatch,
                                                       use_shell):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the launcher, its workers and the commands start here
    ex = make_executor(max_workers=2)
    app = ShellApp(ARGV_PRINTER + " {v}" + (" | cat" if use_shell else ""), name="argv")
    assert app.needs_shell is use_shell
    futs = [ex.submit(app, v=v) for v in HOSTILE_VALUES]
    for v, fut in zip(HOSTILE_VALUES, futs):
        result = fut.result(timeout=RESULT_TIMEOUT_S)
        assert _last_json_line(result) == [v]
        assert not (result.workdir / "PWNED").exists()
    assert not (cwd / "PWNED").exists()
    assert not list(tmp_path.rglob("PWNED"))


def test_bad_params_raise_at_submit_and_store_nothing(make_executor):
    ex = make_executor(max_workers=1, launcher=False)
    app = ShellApp("cp {src} {dst}")
    with pytest.raises(TypeError, match=r"missing parameter\(s\): dst; the app takes: dst, src"):
        ex.submit(app, src="a")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\): extra; the app takes"):
        ex.submit(app, src="a", dst="b", extra=1)
    with pytest.raises(TypeError, match=r"missing parameter\(s\): dst; unknown parameter\(s\): "
                                        r"dest"):
        ex.options(max_retries=1).submit(app, src="a", dest="b")
    with pytest.raises(TypeError, match="'dst' must be a str, int, float, bool or pathlib.Path"):
        ex.submit(app, src="a", dst=["b"])
    with pytest.raises(TypeError, match="by keyword only"):
        ex.submit(app, "a", "b")
    with pytest.raises(ValueError, match="NUL"):
        ex.submit(app, src="a\0", dst="b")
    assert ex.flush(timeout=10)
    assert ex.store.count_by_state() == {}


def test_non_zero_exit_raises_shell_task_error_with_code_and_tail(make_executor):
    ex = make_executor(max_workers=1)
    fut = ex.submit(ShellApp("echo {msg}; echo to-stderr >&2; exit 3"), msg="something broke")
    with pytest.raises(ShellTaskError) as info:
        fut.result(timeout=RESULT_TIMEOUT_S)
    err = info.value
    assert isinstance(err, TaskFailed)
    assert err.returncode == 3
    assert err.task_id == fut.task_id
    assert err.cmd == "echo 'something broke'; echo to-stderr >&2; exit 3"
    assert err.output_tail.splitlines()[-2:] == ["something broke", "to-stderr"]
    assert "exited with code 3" in str(err) and "to-stderr" in str(err)
    assert err.workdir and os.path.isdir(err.workdir)
    assert ex.store.get_tasks([fut.task_id])[0]["state"] == "FAILED"


@pytest.mark.parametrize("command", ["definitely-not-a-command-xyz {arg}",
                                     "definitely-not-a-command-xyz {arg} > out.txt"],
                         ids=["no-shell", "shell"])
def test_missing_program_is_named(make_executor, command):
    ex = make_executor(max_workers=1)
    t0 = time.monotonic()
    with pytest.raises(ShellCommandNotFound) as info:
        ex.submit(ShellApp(command), arg="1").result(timeout=RESULT_TIMEOUT_S)
    assert time.monotonic() - t0 < 10
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, ShellTaskError)
    assert err.executable == "definitely-not-a-command-xyz"
    assert err.returncode == 127
    assert "'definitely-not-a-command-xyz' was not found on PATH" in str(err)


def test_template_with_pipe_and_redirect_runs_under_a_shell(make_executor):
    ex = make_executor(max_workers=1)
    app = ShellApp("echo {words} | tr a-z A-Z > upper.txt")
    assert app.needs_shell
    result = ex.submit(app, words="hello; world").result(timeout=RESULT_TIMEOUT_S)
    assert (result.workdir / "upper.txt").read_text() == "HELLO; WORLD\n"


def test_environment_reaches_the_command(make_executor):
    ex = make_executor(max_workers=1)
    app = ShellApp("printenv GREETING BALSAM_FUTURES_TASK_ID", env={"GREETING": "hi there"})
    fut = ex.submit(app)
    result = fut.result(timeout=RESULT_TIMEOUT_S)
    assert result.tail(2).splitlines() == ["hi there", str(fut.task_id)]
    assert config.env_name("TASK_ID") == "BALSAM_FUTURES_TASK_ID"


def test_default_workdir_layout_under_the_site(make_executor, site_dir):
    ex = make_executor(max_workers=2)
    app = ShellApp("pwd")
    tagged = ex.options(name="my run/1", tags={"workflow": "wf-a"}).submit(app)
    plain = ex.submit(app)
    data = site_dir.absolute() / "data"
    r1, r2 = tagged.result(RESULT_TIMEOUT_S), plain.result(RESULT_TIMEOUT_S)
    assert r1.workdir == data / "wf-a" / f"my_run_1_{tagged.task_id}"
    assert r2.workdir == data / "default" / f"pwd_{plain.task_id}"
    for r in (r1, r2):
        assert r.tail(1) == str(r.workdir)
        assert stat.S_IMODE(r.workdir.stat().st_mode) == 0o700


def test_custom_workdir_template(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    app = ShellApp("touch {sample}.txt", workdir=str(tmp_path / "runs" / "{sample}-{id}"))
    fut = ex.submit(app, sample="s1")
    result = fut.result(timeout=RESULT_TIMEOUT_S)
    assert result.workdir == tmp_path / "runs" / f"s1-{fut.task_id}"
    assert (result.workdir / "s1.txt").exists()
    with pytest.raises(ValueError, match=r"'\.\.'"):
        ex.submit(app, sample="../escape")


def test_inputs_are_copied_or_linked(make_executor, tmp_path):
    src = tmp_path / "inputs"
    src.mkdir()
    (src / "a.txt").write_text("A\n")
    (src / "b1.dat").write_text("B1\n")
    (src / "b2.dat").write_text("B2\n")
    ex = make_executor(max_workers=2)
    copied = ShellApp("cat a.txt b1.dat b2.dat", inputs=[src / "a.txt", str(src / "b*.dat")])
    linked = ShellApp("cat renamed.txt dats/b1.dat", link=True,
                      inputs={"renamed.txt": src / "a.txt", "dats": str(src / "*.dat")})
    r1 = ex.submit(copied).result(timeout=RESULT_TIMEOUT_S)
    r2 = ex.submit(linked).result(timeout=RESULT_TIMEOUT_S)
    assert r1.tail(3).splitlines() == ["A", "B1", "B2"]
    assert not (r1.workdir / "a.txt").is_symlink()
    assert r2.tail(2).splitlines() == ["A", "B1"]
    assert os.readlink(r2.workdir / "renamed.txt") == str(src / "a.txt")
    assert (r2.workdir / "dats" / "b2.dat").is_symlink()

    missing = ex.submit(ShellApp("true", inputs=[src / "nope.txt"]))
    with pytest.raises(ShellInputNotFound, match="nope.txt") as info:
        missing.result(timeout=RESULT_TIMEOUT_S)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.filename == str(src / "nope.txt")


def test_preprocess_and_postprocess(make_executor):
    ex = make_executor(max_workers=2)
    prepared = ShellApp("cat prepared.txt && echo {word}", preprocess=write_prepared)
    summarized = ShellApp("echo {word}", postprocess=summarize)
    refused = ShellApp("echo never", preprocess=refuse)
    f1 = ex.submit(prepared, word="w1")
    f2 = ex.submit(summarized, word="w2")
    f3 = ex.submit(refused)
    assert f1.result(RESULT_TIMEOUT_S).tail(2).splitlines() == [f"prepared w1 {f1.task_id}", "w1"]
    assert f2.result(RESULT_TIMEOUT_S) == {"task_id": f2.task_id, "code": 0, "last": "w2"}
    with pytest.raises(PreprocessFailed, match=f"no input for task {f3.task_id}"):
        f3.result(RESULT_TIMEOUT_S)
    # The command never ran: its working directory exists, but no job.out.
    refused_dir = ex.site / "data" / "default" / f"echo_{f3.task_id}"
    assert refused_dir.is_dir() and not (refused_dir / "job.out").exists()


def test_raising_postprocess_is_retried(make_executor):
    ex = make_executor(max_workers=1)
    fut = ex.options(max_retries=1).submit(ShellApp("echo run", postprocess=flaky_postprocess))
    assert fut.result(timeout=RESULT_TIMEOUT_S) == 2
    history = [h["to_state"] for h in ex.store.history(fut.task_id)]
    assert "RESTART_READY" in history and history[-1] == "JOB_FINISHED"
    # Both runs appended to the same job.out, each under its own header line.
    text = (ex.site / "data" / "default" / f"echo_{fut.task_id}" / "job.out").read_text()
    assert text.count("# balsam_futures: task") == 2 and text.splitlines().count("run") == 2


def test_timeout_stops_a_shell_task(make_executor):
    ex = make_executor(max_workers=1)
    t0 = time.monotonic()
    fut = ex.options(timeout=1, auto_timeout_retry=False).submit(ShellApp("sleep {s}"), s=30)
    with pytest.raises(TaskTimeout):
        fut.result(timeout=RESULT_TIMEOUT_S)
    assert time.monotonic() - t0 < 10
    assert ex.store.get_tasks([fut.task_id])[0]["state"] == "FAILED"


def test_kill_stops_a_running_shell_task(make_executor, tmp_path):
    ex = make_executor(max_workers=1)
    pid_file = tmp_path / "pid"
    fut = ex.submit(ShellApp("echo $$ > {pid_file}; exec sleep 30"), pid_file=pid_file)
    pid = int(_wait_for_content(pid_file))
    assert alive(pid)
    assert fut.kill() is True
    with pytest.raises(TaskKilled):
        fut.result(timeout=10)
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, "the shell task's process survived the kill"
        time.sleep(0.01)


def test_shell_task_waits_for_the_task_it_depends_on(make_executor, tmp_path):
    ex = make_executor(max_workers=2)
    path = tmp_path / "made-by-parent.txt"
    parent = ex.submit(write_file, str(path), "from the parent\n")
    child = ex.options(depends_on=[parent]).submit(ShellApp("cat {path}"), path=path)
    assert child.result(timeout=RESULT_TIMEOUT_S).tail(1) == "from the parent"
    assert ex.store.get_tasks([child.task_id])[0]["kind"] == "shell"


def test_parent_outputs_by_pattern_are_copied_in(make_executor):
    ex = make_executor()
    produce = ShellApp("sh -c 'echo 42 > result.dat; echo x > other.log'", name="produce")
    consume = ShellApp("cat result.dat", name="consume", parent_outputs=("*.dat",))
    parent = ex.submit(produce)
    child = ex.options(depends_on=[parent]).submit(consume)
    result = child.result(timeout=30)
    assert (result.workdir / "result.dat").read_text() == "42\n"
    assert not (result.workdir / "other.log").exists()
    assert "42" in result.tail()
    with pytest.raises(ValueError, match="relative glob"):
        ShellApp("true", parent_outputs=("/etc/*",))
