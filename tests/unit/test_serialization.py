"""Payloads, results and exceptions as bytes (``balsam_futures.serialization``)."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest

from balsam_futures import config
from balsam_futures.errors import PayloadError, PayloadTooLarge, RemoteError, RemoteTraceback
from balsam_futures.serialization import (
    CallLoader,
    dump_call,
    dump_callable,
    dump_exception,
    dump_result,
    load_exception,
    load_result,
)

pytestmark = pytest.mark.timeout(60)

LIMIT_VAR = config.env_name("MAX_PAYLOAD_BYTES")


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    monkeypatch.delenv(LIMIT_VAR, raising=False)


def add(a, b=0):
    return a + b


def make_closure(offset):
    def shifted(x):
        return x + offset
    return shifted


class Adder:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        return x + self.n


def round_trip(fn, *args, **kwargs):
    payload = dump_call(dump_callable(fn), args, kwargs)
    loaded, largs, lkwargs = CallLoader().load(payload)
    return loaded(*largs, **lkwargs)


# --------------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------------


class TestCalls:
    def test_module_function(self):
        assert round_trip(add, 2, b=3) == 5

    def test_lambda(self):
        assert round_trip(lambda x, y: x * y, 6, 7) == 42

    def test_closure(self):
        assert round_trip(make_closure(10), 5) == 15

    def test_local_function_capturing_a_variable(self):
        base = [1, 2, 3]

        def total(extra):
            return sum(base) + extra

        assert round_trip(total, 4) == 10

    def test_partial_of_module_function(self):
        assert round_trip(functools.partial(add, 1), b=2) == 3

    def test_partial_of_lambda(self):
        assert round_trip(functools.partial(lambda a, b: a - b, 10), 4) == 6

    def test_callable_instance_and_builtin(self):
        assert round_trip(Adder(3), 4) == 7
        assert round_trip(max, 3, 9, 4) == 9

    def test_arguments_and_keywords_survive(self):
        payload = dump_call(dump_callable(add), (1, [2, 3]), {"b": {"k": (4,)}})
        _, args, kwargs = CallLoader().load(payload)
        assert args == (1, [2, 3])
        assert kwargs == {"b": {"k": (4,)}}

    def test_not_callable(self):
        with pytest.raises(TypeError, match="not callable"):
            dump_callable(42)

    def test_unpicklable_callable_names_it(self):
        lock = threading.Lock()

        def holds_lock():
            return lock.locked()

        with pytest.raises(PayloadError, match="holds_lock"):
            dump_callable(holds_lock)

    def test_unpicklable_argument_fails_at_dump_call(self):
        fn_bytes = dump_callable(add)
        with pytest.raises(PayloadError) as info:
            dump_call(fn_bytes, (threading.Lock(),), {})
        assert isinstance(info.value, TypeError)
        message = str(info.value)
        assert "arguments" in message
        assert "lock" in message

    def test_unpicklable_keyword_argument(self):
        with pytest.raises(TypeError, match="arguments"):
            dump_call(dump_callable(add), (), {"b": threading.Lock()})


class TestCallLoaderCache:
    def test_same_bytes_give_the_same_callable(self):
        fn_bytes = dump_callable(lambda x: x + 1)
        loader = CallLoader()
        f1, a1, _ = loader.load(dump_call(fn_bytes, (1,), {}))
        f2, a2, _ = loader.load(dump_call(fn_bytes, (2,), {}))
        assert f1 is f2
        assert (f1(*a1), f2(*a2)) == (2, 3)

    def test_without_the_cache_a_lambda_is_rebuilt(self):
        # The control for the test above: unpickling twice gives two objects.
        fn_bytes = dump_callable(lambda x: x + 1)
        assert pickle.loads(fn_bytes) is not pickle.loads(fn_bytes)

    def test_different_loaders_do_not_share(self):
        payload = dump_call(dump_callable(lambda: 1), (), {})
        assert CallLoader().load(payload)[0] is not CallLoader().load(payload)[0]

    def test_least_recently_used_is_evicted(self):
        loader = CallLoader(size=2)
        blobs = [dump_callable(make_closure(i)) for i in range(3)]
        payloads = [dump_call(b, (0,), {}) for b in blobs]
        first = loader.load(payloads[0])[0]
        loader.load(payloads[1])
        assert loader.load(payloads[0])[0] is first   # refreshes 0
        loader.load(payloads[2])                       # evicts 1, the least recently used
        assert loader.load(payloads[0])[0] is first
        assert [f(0) for f in (loader.load(p)[0] for p in payloads)] == [0, 1, 2]


class TestSizeLimit:
    def test_payload_over_the_limit(self, monkeypatch):
        monkeypatch.setenv(LIMIT_VAR, "1000")
        fn_bytes = dump_callable(add)
        dump_call(fn_bytes, ("x" * 10,), {})
        with pytest.raises(PayloadTooLarge) as info:
            dump_call(fn_bytes, ("x" * 2000,), {})
        assert isinstance(info.value, PayloadError)
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        assert LIMIT_VAR in message
        assert "1,000" in message

    def test_result_over_the_limit(self, monkeypatch):
        monkeypatch.setenv(LIMIT_VAR, "1000")
        assert load_result(dump_result([1, 2])) == [1, 2]
        with pytest.raises(PayloadTooLarge, match=LIMIT_VAR):
            dump_result(b"x" * 5000)

    def test_unpicklable_result(self):
        with pytest.raises(PayloadError, match="Lock|lock"):
            dump_result(threading.Lock())

    def test_result_round_trip_of_a_local_object(self):
        assert load_result(dump_result(make_closure(2)))(1) == 3


# --------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------


class TaskSpecificError(Exception):
    pass


class NeedsTwoArgs(Exception):
    """``args`` holds one value and ``__init__`` wants two: plain pickle cannot rebuild it."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path


class CannotUnpickle(Exception):
    """Pickles, but does not unpickle: its ``__reduce__`` leaves out an argument."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path

    def __reduce__(self):
        return (type(self), (self.path,))


def remote_function_that_fails(exc):
    raise exc


def raised(exc: BaseException) -> BaseException:
    try:
        remote_function_that_fails(exc)
    except BaseException as caught:
        return caught
    raise AssertionError("did not raise")


WHERE = "task 17 (fit_model) on host nid00042, launcher 3"


class TestExceptions:
    def test_type_message_and_cause(self):
        original = raised(ValueError("bad value 7"))
        exc = load_exception(dump_exception(original, WHERE), task_id=17)
        assert type(exc) is ValueError
        assert str(exc) == "bad value 7"
        assert isinstance(exc.__cause__, RemoteTraceback)
        cause = str(exc.__cause__)
        assert WHERE in cause
        assert "remote_function_that_fails" in cause
        assert "ValueError: bad value 7" in cause

    def test_custom_exception_keeps_its_type_and_attributes(self):
        original = raised(TaskSpecificError("custom"))
        original.detail = {"k": 1}
        exc = load_exception(dump_exception(original, WHERE))
        assert type(exc) is TaskSpecificError
        assert exc.detail == {"k": 1}

    def test_traceback_is_kept(self):
        exc = load_exception(dump_exception(raised(KeyError("k")), WHERE))
        assert exc.__traceback__ is not None

    def test_exception_class_defined_in_a_function(self):
        # A locally defined class is pickled by value (cloudpickle).
        class LocalError(RuntimeError):
            pass

        exc = load_exception(dump_exception(raised(LocalError("local")), WHERE))
        assert type(exc).__name__ == "LocalError"
        assert isinstance(exc, RuntimeError)
        assert str(exc) == "local"

    def test_custom_init_without_super_args_still_comes_back(self):
        # Plain pickle fails on this class (NeedsTwoArgs(*args) lacks an argument); tblib's
        # reducer rebuilds it without calling __init__, so it keeps its type.
        with pytest.raises(TypeError):
            pickle.loads(pickle.dumps(NeedsTwoArgs("p", "r")))
        exc = load_exception(dump_exception(raised(NeedsTwoArgs("/data/x", "gone")), WHERE))
        assert type(exc) is NeedsTwoArgs
        assert str(exc) == "/data/x: gone"
        assert exc.path == "/data/x"

    def test_exception_that_cannot_be_unpickled_becomes_remote_error(self):
        original = raised(CannotUnpickle("/data/in.h5", "missing"))
        exc = load_exception(dump_exception(original, WHERE), task_id=17)
        assert type(exc) is RemoteError
        assert exc.type_name.endswith(".CannotUnpickle")
        assert exc.task_id == 17
        assert "/data/in.h5: missing" in str(exc)
        assert WHERE in exc.remote_traceback
        assert "remote_function_that_fails" in exc.remote_traceback
        assert "remote_function_that_fails" in str(exc)

    def test_exception_from_a_module_this_side_cannot_import(self, tmp_path):
        module_dir = tmp_path / "remote_only"
        module_dir.mkdir()
        (module_dir / "bf_remote_only_mod.py").write_text(textwrap.dedent("""
            class GhostError(Exception):
                pass

            def ghost_task():
                raise GhostError("only the worker knows this type")
        """))
        blob_path = tmp_path / "exc.bin"
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(module_dir)!r})
            import bf_remote_only_mod
            from balsam_futures.serialization import dump_exception
            try:
                bf_remote_only_mod.ghost_task()
            except Exception as exc:
                blob = dump_exception(exc, {WHERE!r})
            open({str(blob_path)!r}, "wb").write(blob)
        """)
        subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
        assert "bf_remote_only_mod" not in sys.modules
        exc = load_exception(blob_path.read_bytes(), task_id=5)
        assert type(exc) is RemoteError
        assert exc.type_name == "bf_remote_only_mod.GhostError"
        assert exc.task_id == 5
        assert "only the worker knows this type" in str(exc)
        assert "ghost_task" in exc.remote_traceback
        assert WHERE in exc.remote_traceback

    def test_chained_exception_keeps_the_remote_text(self):
        try:
            try:
                remote_function_that_fails(KeyError("inner"))
            except KeyError as inner:
                raise RuntimeError("outer") from inner
        except RuntimeError as outer:
            blob = dump_exception(outer, WHERE)
        exc = load_exception(blob)
        assert type(exc) is RuntimeError
        # The cause is replaced by the remote text, which still shows the whole chain.
        text = str(exc.__cause__)
        assert "KeyError: 'inner'" in text
        assert "RuntimeError: outer" in text
