"""Shell applications without a launcher (``balsam_futures.apps``): template checks, quoting,
when a shell is used, parameter checks, working directories, inputs, the runner called in
this process with a task context, and the shell errors' trip through serialization."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from balsam_futures import (
    ShellApp,
    ShellCommandNotFound,
    ShellInputNotFound,
    ShellResult,
    ShellTaskError,
    TaskFailed,
)
from balsam_futures import tasks as _tasks
from balsam_futures._shell_run import _safe_name, _tail
from balsam_futures.apps import _run_shell_task, shell_call
from balsam_futures.serialization import dump_callable, dump_exception, load_exception

pytestmark = pytest.mark.timeout(30)

HOSTILE = ["x; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "a'b\"c", "l1\ntouch PWNED",
           "'; touch PWNED; '", "\\", "*", "", " lead", "~", "#c", "-n", "a\tb", "é€"]


# -- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize("command, field", [
    ("echo {}", "{}"), ("echo {0}", "{0}"), ("echo {a.b}", "{a.b}"), ("echo {a[0]}", "{a[0]}"),
    ("echo {a b}", "{a b}"),
])
def test_fields_must_be_plain_names(command, field):
    with pytest.raises(ValueError) as info:
        ShellApp(command)
    assert field in str(info.value)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"command": 3}, TypeError, "command must be a str"),
    ({"command": "  "}, ValueError, "non-empty"),
    ({"command": "echo {x"}, ValueError, "not a valid template"),
    ({"command": "echo {x:{y}}"}, ValueError, "nested"),
    ({"command": "echo", "preprocess": 1}, TypeError, "preprocess must be a callable"),
    ({"command": "echo", "postprocess": "f"}, TypeError, "postprocess must be a callable"),
    ({"command": "echo", "env": {"A": 1}}, TypeError, r"env\['A'\]"),
    ({"command": "echo", "env": {"A=B": "1"}}, ValueError, "environment variable name"),
    ({"command": "echo", "workdir": "rel/{id}"}, ValueError, "absolute"),
    ({"command": "echo", "workdir": "/a/../b"}, ValueError, r"'\.\.'"),
    ({"command": "echo {x}", "workdir": "/a/{y}"}, ValueError, "workdir uses y"),
    ({"command": "echo", "inputs": 3}, TypeError, "inputs must be"),
    ({"command": "echo", "inputs": {"../up": "/a"}}, ValueError, "relative name"),
    ({"command": "echo", "link": "yes"}, TypeError, "link must be a bool"),
    ({"command": "echo 'open"}, ValueError, "unterminated"),
    ({"command": "echo \\"}, ValueError, "lone backslash"),
])
def test_constructor_checks(kwargs, error, match):
    with pytest.raises(error, match=match):
        ShellApp(**kwargs)


@pytest.mark.parametrize("command, where", [
    ("echo '{v}'", "single quotes"),
    ('echo "{v}"', "double quotes"),
    ("echo `cat {v}`", "backticks"),
    ("echo hi # {v}", "a comment"),
    ("echo \\{v}", "a backslash"),
    ("echo ${v}", "after \\$"),
    ("cat <<EOF\n{v}\nEOF", "here-document"),
])
def test_placeholders_only_in_plain_shell_words(command, where):
    with pytest.raises(ValueError, match=f"stands .*{where}"):
        ShellApp(command)


@pytest.mark.parametrize("command, needs_shell", [
    ("echo {a} {b}", False),
    ("printf '%s\\n' {v}", False),
    ("echo 'a|b; c > d' \"$\"x", True),  # $ in double quotes expands
    ("echo 'a|b; c > d' x#y", False),
    ("prog --opt={v} -x", False),
    ("echo {a} | wc -l", True),
    ("echo {a} > out", True),
    ("echo {a} < in", True),
    ("a {x}; b", True),
    ("a && b {x}", True),
    ("echo $HOME {x}", True),
    ("echo `date`", True),
    ("ls *.txt", True),
    ("ls file?", True),
    ("(cd x && ls)", True),
    ("echo a\necho b", True),
    ("echo {x} # note", True),
    ("cd /tmp", True),
    ("FOO=1 prog {x}", True),
    ("echo ~", True),
    ("echo a\\|b", False),
])
def test_needs_shell_is_decided_from_the_template(command, needs_shell):
    assert ShellApp(command).needs_shell is needs_shell


def test_params_name_and_render():
    app = ShellApp("sim --in {infile} --n {n:03d} --x {x!r} {{literal}} {infile}")
    assert app.params == frozenset({"infile", "n", "x"})
    assert app.default_name == "sim"
    assert ShellApp("/usr/bin/env python {s}").default_name == "env"
    assert ShellApp("{exe} -v").default_name == "shell"
    assert ShellApp("x", name="mine").default_name == "mine"
    rendered = app.render(infile=Path("/d/a b"), n=7, x="q")
    assert rendered.startswith("sim --in '/d/a b' --n 007 --x ")
    assert shlex.split(rendered) == ["sim", "--in", "/d/a b", "--n", "007", "--x", "'q'",
                                     "{literal}", "/d/a b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_rendered_value_is_one_literal_argument_without_a_shell(value):
    app = ShellApp("printf '%s\\n' {v} end")
    assert shlex.split(app.render(v=value)) == ["printf", "%s\\n", value, "end"]


def test_rendered_values_are_literal_under_a_real_shell(tmp_path):
    app = ShellApp(shlex.quote(sys.executable)
                   + " -c 'import json, sys; print(json.dumps(sys.argv[1:]))' {v} | cat")
    assert app.needs_shell
    for value in HOSTILE:
        out = subprocess.run(["/bin/sh", "-c", app.render(v=value)], cwd=tmp_path, check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out) == [value]
    assert not list(tmp_path.iterdir())  # no PWNED


def test_bind_checks_names_types_and_values():
    app = ShellApp("cp {src} {dst}")
    assert app.bind(src="a", dst=Path("b")) == {"src": "a", "dst": Path("b")}
    with pytest.raises(TypeError, match=r"^missing parameter\(s\): dst; unknown parameter\(s\): "
                                        r"x, y; the app takes: dst, src$"):
        app.bind(src="a", x=1, y=2)
    with pytest.raises(TypeError, match="the app takes: no parameters"):
        ShellApp("ls").bind(a=1)
    with pytest.raises(TypeError, match="'dst' must be a str"):
        app.bind(src="a", dst=None)
    with pytest.raises(TypeError, match="keyword only"):
        app.bind("a", dst="b")
    with pytest.raises(ValueError, match="NUL"):
        app.bind(src="a", dst="b\0")
    with pytest.raises(ValueError):
        ShellApp("echo {n:05d}").bind(n="not a number")  # format errors at submit
    wd = ShellApp("echo {s}", workdir="/runs/{s}/{id}")
    wd.bind(s="ok/sub")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        wd.bind(s="..")


def test_shell_call_is_a_picklable_python_call():
    app = ShellApp("echo {x}", env={"A": "1"}, preprocess=lambda ctx: None)
    fn, args = shell_call(app, (), {"x": 1})
    assert fn is _run_shell_task and args == (app, {"x": 1})
    assert pickle.loads(dump_callable(fn)) is _run_shell_task
    import cloudpickle

    again = pickle.loads(cloudpickle.dumps(app))
    assert again.command == app.command and again.env == {"A": "1"} and again.needs_shell is False
    hash(app)  # usable as a key despite its env dict


def test_inputs_are_normalized_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = ShellApp("ls", inputs=["a.txt", tmp_path / "b*.dat"])
    assert app.inputs == ((None, str(tmp_path / "a.txt")), (None, str(tmp_path / "b*.dat")))
    assert ShellApp("ls", inputs="one").inputs == ((None, str(tmp_path / "one")),)
    assert ShellApp("ls", inputs={"x/y": "z"}).inputs == (("x/y", str(tmp_path / "z")),)


@pytest.mark.parametrize("name, safe", [("a b/c", "a_b_c"), ("..", "__"), (".", "_"), ("", "_"),
                                        ("ok.name-1", "ok.name-1"), ("é", "_")])
def test_safe_name(name, safe):
    assert _safe_name(name) == safe


def test_tail_reads_the_last_lines(tmp_path):
    path = tmp_path / "job.out"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert _tail(path, 3) == "line 997\nline 998\nline 999"
    assert _tail(path, 3, block=5) == "line 997\nline 998\nline 999"
    assert _tail(path, 0) == ""
    short = tmp_path / "short"
    short.write_text("only\n")
    assert _tail(short, 20) == "only"
    assert ShellResult(0, tmp_path, path).tail(1) == "line 999"


# -- errors travel to the master -------------------------------------------------------------


@pytest.mark.parametrize("err", [
    ShellTaskError(3, "false x", workdir="/w", output_tail="out", task_id=5),
    ShellCommandNotFound("nope-xyz", "nope-xyz 1", workdir="/w", task_id=6, path="/bin"),
    ShellInputNotFound("/data/*.h5", task_id=7),
], ids=lambda e: type(e).__name__)
def test_shell_errors_round_trip_through_serialization(err):
    try:
        raise err
    except TaskFailed as exc:
        blob = dump_exception(exc, "Task on host")
    back = load_exception(blob)
    assert type(back) is type(err)
    assert back.__dict__ == err.__dict__
    assert str(back) == str(err) and back.args == err.args
    assert "Task on host" in str(back.__cause__)
    if isinstance(err, ShellInputNotFound):
        assert back.filename == "/data/*.h5" and str(back).startswith("input '/data/*.h5'")
    assert pickle.loads(pickle.dumps(err)).__dict__ == err.__dict__


def test_shell_error_messages():
    err = ShellTaskError(2, "cmd", workdir="/w", output_tail="a\nb", task_id=1)
    assert str(err) == ("shell task 1 exited with code 2: cmd\n(working directory /w)\n"
                        "last lines of job.out:\na\nb")
    assert "signal SIGTERM" in str(ShellTaskError(-15, "cmd"))
    missing = ShellCommandNotFound("./run.sh", "./run.sh")
    assert "does not exist or is not an executable file" in str(missing)
    assert isinstance(missing, FileNotFoundError) and missing.returncode == 127


# -- the runner, called here with a task context ---------------------------------------------


@pytest.fixture
def in_task(tmp_path):
    def enter(task_id=1, name="t", tags=None):
        _tasks._set_current(_tasks.TaskContext(id=task_id, name=name, tags=tags or {},
                                               site=str(tmp_path / "site")))
    yield enter
    _tasks._set_current(None)


def test_runner_outside_a_task_refuses():
    with pytest.raises(RuntimeError, match="only inside"):
        _run_shell_task(ShellApp("true"), {})


def test_runner_layout_env_inputs_and_hooks(tmp_path, in_task):
    (tmp_path / "in.txt").write_text("input\n")
    seen = {}

    def pre(ctx):
        seen["pre"] = (ctx.task_id, ctx.name, ctx.workdir, dict(ctx.params),
                       _tasks.current_task().workdir)

    app = ShellApp("cat in.txt; echo {v} $COLOR $BALSAM_FUTURES_TASK_ID", env={"COLOR": "red"},
                   inputs=[tmp_path / "in.txt"], preprocess=pre,
                   postprocess=lambda ctx, r: ("post", r.tail(2)))
    in_task(42, "my task", {"workflow": "../wf"})
    assert _run_shell_task(app, {"v": "a b"}) == ("post", "input\na b red 42")
    workdir = tmp_path / "site" / "data" / ".._wf" / "my_task_42"
    assert seen["pre"] == (42, "my task", workdir, {"v": "a b"}, str(workdir))
    assert oct(workdir.stat().st_mode & 0o777) == "0o700"


def test_a_run_leaves_the_worker_environment_as_it_was(in_task, monkeypatch):
    # A plain command inherits the worker's environment, with its own variables set there
    # for the run only: the next task run in this worker must not see them.
    monkeypatch.setenv("COLOR", "blue")
    monkeypatch.delenv("BALSAM_FUTURES_TASK_ID", raising=False)
    in_task(7)
    app = ShellApp("printenv COLOR BALSAM_FUTURES_TASK_ID", env={"COLOR": "red"})
    assert _run_shell_task(app, {}).tail(2) == "red\n7"
    assert os.environ["COLOR"] == "blue"
    assert "BALSAM_FUTURES_TASK_ID" not in os.environ
    with pytest.raises(ShellTaskError):
        _run_shell_task(ShellApp("sh -c 'exit 3'", env={"COLOR": "red"}), {})
    assert os.environ["COLOR"] == "blue"  # put back after a failed run too


def test_a_program_found_once_and_removed_since_is_reported_by_name(tmp_path, in_task):
    tool = tmp_path / "bin" / "mytool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    in_task(8)
    app = ShellApp("mytool", env={"PATH": f"{tool.parent}:/usr/bin:/bin"})
    assert _run_shell_task(app, {}).tail(1) == "ran"
    tool.unlink()
    with pytest.raises(ShellCommandNotFound, match="mytool"):
        _run_shell_task(app, {})


def test_runner_errors(tmp_path, in_task):
    in_task(3)
    with pytest.raises(ShellTaskError, match="exited with code 4") as info:
        _run_shell_task(ShellApp("echo {m} && exit 4"), {"m": "bye"})
    assert info.value.output_tail.endswith("bye")
    with pytest.raises(ShellCommandNotFound, match="'definitely-not-a-command-xyz' was not"):
        _run_shell_task(ShellApp("definitely-not-a-command-xyz"), {})
    with pytest.raises(ShellCommandNotFound, match="'./missing.sh' does not exist"):
        _run_shell_task(ShellApp("./missing.sh"), {})
    with pytest.raises(ShellInputNotFound, match="nothing-here"):
        _run_shell_task(ShellApp("true", inputs=[tmp_path / "nothing-here*"]), {})


def test_runner_custom_workdir_and_reruns(tmp_path, in_task):
    (tmp_path / "a.txt").write_text("A")
    app = ShellApp("ls {x}", workdir=str(tmp_path / "w" / "{name}-{x}-{id}"),
                   inputs={"linked.txt": tmp_path / "a.txt"}, link=True)
    in_task(9, "n/1")
    first = _run_shell_task(app, {"x": "linked.txt"})
    second = _run_shell_task(app, {"x": "linked.txt"})  # a retry: same dir, inputs replaced
    assert first == second and first.workdir == tmp_path / "w" / "n_1-linked.txt-9"
    assert os.readlink(first.workdir / "linked.txt") == str(tmp_path / "a.txt")
    assert first.job_out.read_text().count("# balsam_futures: task 9") == 2
