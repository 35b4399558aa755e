"""Edges of what reaches a worker: an error that cannot be printed goes back as the task's
error (not as a crashed worker), and a command execve(2) would refuse is refused at submit."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

from balsam_futures import BalsamExecutor, ShellApp
from balsam_futures.apps import MAX_ARG_STRLEN, _arg_max, shell_call
from balsam_futures.errors import RemoteError, WorkerCrashed
from balsam_futures.serialization import dump_exception, load_exception

pytestmark = pytest.mark.timeout(60)


class Unprintable(Exception):
    """Neither str() nor repr() works: the worker must not die packing it."""

    def __str__(self):
        raise RuntimeError("no str")

    def __repr__(self):
        raise RuntimeError("no repr")


class _Escape(BaseException):
    pass


class UnprintableHard(Exception):
    """Its __str__ raises a BaseException, which ``traceback`` does not survive."""

    def __str__(self):
        raise _Escape()


class UnprintableUnpicklable(Unprintable):
    """Nor can it be pickled (it holds a lock)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.lock = threading.Lock()


def raise_unprintable():
    raise Unprintable("hidden")


def _packed(exc: BaseException) -> bytes:
    try:
        raise exc
    except BaseException as raised:  # noqa: BLE001 - packing every kind is the point
        return dump_exception(raised, "Task 7 on testhost (launcher 1)")


@pytest.mark.parametrize("cls", [Unprintable, UnprintableHard])
def test_an_exception_whose_str_raises_is_packed_as_the_tasks_own_error(cls):
    blob = _packed(cls("hidden"))
    packed = pickle.loads(blob)
    assert packed["message"] == f"<unprintable {cls.__name__} object>"
    assert packed["type"].endswith(f".{cls.__qualname__}")
    assert "Task 7 on testhost" in packed["traceback"]
    assert "_packed" in packed["traceback"]  # the frames are there
    exc = load_exception(blob, task_id=7)
    assert type(exc) is cls
    assert cls.__name__ in str(exc.__cause__)


def test_one_that_cannot_be_rebuilt_either_is_a_remote_error_naming_its_type():
    exc = load_exception(_packed(UnprintableUnpicklable("hidden")), task_id=7)
    assert isinstance(exc, RemoteError)
    assert exc.type_name.endswith("UnprintableUnpicklable")
    assert "<unprintable UnprintableUnpicklable object>" in str(exc)


def test_a_task_raising_an_unprintable_exception_fails_with_it_not_with_a_crash(tmp_path):
    with BalsamExecutor(max_workers=1, site=tmp_path / "site") as ex:
        worker = ex.submit(os.getpid).result(timeout=30)
        fut = ex.submit(raise_unprintable)
        with pytest.raises(Exception) as info:  # noqa: B017 - its type is checked below
            fut.result(timeout=30)
        assert not isinstance(info.value, WorkerCrashed)
        assert type(info.value) is Unprintable or (
            isinstance(info.value, RemoteError) and "Unprintable" in info.value.type_name)
        assert "raise_unprintable" in str(info.value.__cause__)
        # The same worker carries on: it did not die packing the error.
        assert ex.submit(os.getpid).result(timeout=30) == worker


# -- NUL characters ------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"command": "echo a\0b"}, "command"),
    ({"command": "echo", "workdir": "/runs/a\0b"}, "workdir"),
    ({"command": "echo", "env": {"A": "x\0y"}}, r"env\['A'\]"),
    ({"command": "echo", "env": {"A\0B": "x"}}, "env"),
    ({"command": "echo", "inputs": ["/data/a\0b"]}, "inputs"),
    ({"command": "echo", "inputs": {"in.dat": "/data/a\0b"}}, "inputs"),
    ({"command": "echo", "parent_outputs": ("*.d\0t",)}, "parent_outputs"),
])
def test_a_nul_in_the_app_is_refused_when_it_is_made(kwargs, field):
    command = kwargs.pop("command")
    with pytest.raises(ValueError, match=field):
        ShellApp(command, **kwargs)


def test_a_nul_in_a_value_is_refused_at_submit():
    with pytest.raises(ValueError, match="parameter 'x' contains a NUL"):
        shell_call(ShellApp("echo {x}"), (), {"x": "a\0b"})
    with pytest.raises(ValueError, match="parameter 'd' contains a NUL"):
        shell_call(ShellApp("echo {d}", workdir="/runs/{d}"), (), {"d": "a\0b"})


# -- execve(2) size limits -----------------------------------------------------------------


def test_an_argument_over_max_arg_strlen_is_refused_at_submit():
    # MAX_ARG_STRLEN counts the final NUL: one byte less fits.
    app = ShellApp("echo {x}")
    shell_call(app, (), {"x": "a" * (MAX_ARG_STRLEN - 1)})
    with pytest.raises(ValueError, match=r"an argument takes 131,073 bytes.*MAX_ARG_STRLEN.*"
                                         r"through files"):
        shell_call(app, (), {"x": "a" * MAX_ARG_STRLEN})
    # Bytes, not characters: two bytes each in UTF-8.
    with pytest.raises(ValueError, match="MAX_ARG_STRLEN"):
        shell_call(app, (), {"x": "é" * (MAX_ARG_STRLEN // 2)})


def test_under_a_shell_the_whole_command_is_one_argument():
    half = "a" * (MAX_ARG_STRLEN // 2 + 10)
    shell_call(ShellApp("echo {x} {y}"), (), {"x": half, "y": half})  # two arguments
    with pytest.raises(ValueError, match="the whole command, one argument of /bin/sh -c"):
        shell_call(ShellApp("echo {x} {y} | cat"), (), {"x": half, "y": half})


def test_arguments_and_env_over_arg_max_together_are_refused_at_submit():
    each = MAX_ARG_STRLEN - 100
    count = _arg_max() // each + 1
    app = ShellApp(" ".join(["echo"] + [f"{{a{i}}}" for i in range(count)]))
    with pytest.raises(ValueError, match=r"arguments and env take .* bytes.*ARG_MAX"):
        shell_call(app, (), {f"a{i}": "z" * each for i in range(count)})
    # The app's env counts too.
    command = " ".join(["echo"] + [f"{{a{i}}}" for i in range(count - 1)])
    values = {f"a{i}": "z" * each for i in range(count - 1)}
    shell_call(ShellApp(command), (), values)
    with pytest.raises(ValueError, match="ARG_MAX"):
        shell_call(ShellApp(command, env={"V0": "v" * each, "V1": "v" * each}), (), values)


def test_an_env_value_over_max_arg_strlen_is_refused_when_the_app_is_made():
    with pytest.raises(ValueError, match=r"env\['BIG'\].*MAX_ARG_STRLEN"):
        ShellApp("echo", env={"BIG": "v" * MAX_ARG_STRLEN})
