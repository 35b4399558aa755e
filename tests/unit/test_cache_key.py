"""Cache keys (balsam_futures.cache_key): stable across processes, changed by what matters."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import os
import subprocess
import sys
import textwrap
import threading
import types
from concurrent.futures import Future
from pathlib import Path

import pytest

import balsam_futures
from balsam_futures._key_encoding import _code_digest
from balsam_futures.apps import ShellApp
from balsam_futures.cache_key import KEY_LENGTH, call_key, shell_key
from balsam_futures.errors import BalsamFuturesError, CacheKeyError

REPO = Path(balsam_futures.__file__).resolve().parents[1]

LIMIT = 10


def add(a, b=1, *, c=0):
    return a + b + c + LIMIT


def _compile(source: str, name: str = "mod") -> types.ModuleType:
    """A fresh module made from source (same module name and qualnames every time)."""
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


def _run_script(path: Path, seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- the callable ----------------------------------------------------------------------------


def test_same_call_same_key_and_shape():
    key = call_key(add, (1, 2), {"c": 3})
    assert key == call_key(add, (1, 2), {"c": 3})
    assert len(key) == KEY_LENGTH and int(key, 16) >= 0


def test_changed_argument_changes_key():
    base = call_key(add, (1, 2), {})
    assert call_key(add, (1, 3), {}) != base
    assert call_key(add, (1, 2.0), {}) != base  # 2 and 2.0 are different values here
    assert call_key(add, (1,), {"b": 2}) != base  # positional vs keyword: not normalized
    assert call_key(add, (1, 2), {"c": 0}) != base
    assert call_key(add, (True, 2), {}) != call_key(add, (1, 2), {})


def test_keyword_order_does_not_matter():
    assert call_key(add, (), {"a": 1, "c": 2}) == call_key(add, (), {"c": 2, "a": 1})


def test_dict_argument_keeps_insertion_order():
    # The callable can see a dict's order (by iterating it), so the order is part of the value.
    assert call_key(add, ({"a": 1, "b": 2},), {}) != call_key(add, ({"b": 2, "a": 1},), {})
    assert call_key(add, ({"a": 1, "b": 2},), {}) == call_key(add, ({"a": 1, "b": 2},), {})


def test_edited_body_changes_key():
    v1 = _compile("def work(x):\n    return x + 1\n")
    v1b = _compile("def work(x):\n    return x + 1\n")
    v2 = _compile("def work(x):\n    return x + 2\n")
    v3 = _compile("def work(x):\n    return x - 1\n")
    assert v1.work.__qualname__ == v2.work.__qualname__
    keys = {call_key(m.work, (1,), {}) for m in (v1, v2, v3)}
    assert len(keys) == 3
    assert call_key(v1.work, (1,), {}) == call_key(v1b.work, (1,), {})


def test_edited_nested_function_changes_key():
    v1 = _compile("def outer(x):\n    def inner(y):\n        return y * 2\n    return inner(x)\n")
    v2 = _compile("def outer(x):\n    def inner(y):\n        return y * 3\n    return inner(x)\n")
    assert call_key(v1.outer, (1,), {}) != call_key(v2.outer, (1,), {})


def test_moved_function_and_comment_keep_key():
    src = "def work(x):\n    return x + 1\n"
    moved = "\n\n\n# a comment\n\n" + "def work(x):\n    # why\n    return x + 1\n"
    assert call_key(_compile(src).work, (1,), {}) == call_key(_compile(moved).work, (1,), {})
    other_file = types.ModuleType("mod")
    exec(compile(src, "/elsewhere/other.py", "exec"), other_file.__dict__)
    assert call_key(other_file.work, (1,), {}) == call_key(_compile(src).work, (1,), {})


def test_defaults_change_key():
    a = _compile("def work(x, y=1):\n    return x + y\n")
    b = _compile("def work(x, y=2):\n    return x + y\n")
    c = _compile("def work(x, *, y=1):\n    return x + y\n")
    assert len({call_key(m.work, (1,), {}) for m in (a, b, c)}) == 3


def test_closure_value_changes_key():
    def make(n):
        def inner(x):
            return x + n
        return inner

    assert call_key(make(1), (5,), {}) != call_key(make(2), (5,), {})
    assert call_key(make(1), (5,), {}) == call_key(make(1), (5,), {})


def test_global_value_read_changes_key():
    mod = _compile("LIMIT = 3\ndef work(x):\n    return min(x, LIMIT)\n")
    before = call_key(mod.work, (9,), {})
    mod.LIMIT = 4  # re-read on every call, not cached with the code
    assert call_key(mod.work, (9,), {}) != before
    mod.LIMIT = 3
    assert call_key(mod.work, (9,), {}) == before


def test_global_function_body_changes_key():
    a = _compile("def helper(x):\n    return x\ndef work(x):\n    return helper(x)\n")
    b = _compile("def helper(x):\n    return -x\ndef work(x):\n    return helper(x)\n")
    assert call_key(a.work, (1,), {}) != call_key(b.work, (1,), {})


def test_recursive_functions_are_hashed():
    mod = _compile("def f(n):\n    return g(n - 1) if n else 0\n"
                   "def g(n):\n    return f(n)\n")
    assert call_key(mod.f, (3,), {}) == call_key(mod.f, (3,), {})


def test_replaced_code_is_noticed():
    mod = _compile("def work(x):\n    return x + 1\n")
    before = call_key(mod.work, (1,), {})
    mod.work.__code__ = _compile("def work(x):\n    return x * 7\n").work.__code__
    assert call_key(mod.work, (1,), {}) != before


def test_specialized_bytecode_keeps_digest():
    mod = _compile("def work(x):\n    return x + 1.5 if x > 3 else x * 2\n")
    before = _code_digest(mod.work.__code__)
    for i in range(5000):  # long enough for the interpreter to specialize the code
        mod.work(i)
    assert _code_digest(mod.work.__code__) == before


def test_other_callables():
    assert call_key(functools.partial(add, 1), (2,), {}) \
        != call_key(functools.partial(add, 2), (2,), {})
    assert call_key(len, ([1],), {}) != call_key(sum, ([1],), {})
    assert call_key("a".upper, (), {}) != call_key("b".upper, (), {})

    class Counter:
        def __init__(self, step):
            self.step = step

        def bump(self, x):
            return x + self.step

        def __call__(self, x):
            return x * self.step

    assert call_key(Counter(1).bump, (1,), {}) != call_key(Counter(2).bump, (1,), {})
    assert call_key(Counter(1), (1,), {}) != call_key(Counter(2), (1,), {})
    assert call_key(Counter(1), (1,), {}) == call_key(Counter(1), (1,), {})
    assert call_key(Counter, (1,), {}) == call_key(Counter, (1,), {})
    cached = functools.lru_cache(add)
    assert call_key(cached, (1,), {}) != call_key(functools.lru_cache(len), (1,), {})


def test_function_in_main_is_stable_across_runs_and_seeds(tmp_path):
    body = textwrap.dedent("""
        from balsam_futures.cache_key import call_key
        SCALE = {{"x", "y", "z"}}
        def work(x, tags=frozenset({{"a", "b", "c"}})):
            return x {op} len(SCALE) if "q" not in {{"p", "q", "r"}} else 0
        print(call_key(work, (1, {{"u", "v", "w"}}), {{}}))
    """)
    v1 = tmp_path / "v1.py"
    v2 = tmp_path / "v2.py"
    v1.write_text(body.format(op="+"))
    v2.write_text(body.format(op="-"))
    keys = {_run_script(v1, seed) for seed in ("1", "2", "12345")}
    assert len(keys) == 1
    assert _run_script(v2, "1") not in keys


def test_set_argument_order_independent_across_seeds(tmp_path):
    script = tmp_path / "sets.py"
    script.write_text(textwrap.dedent("""
        from balsam_futures.cache_key import call_key
        words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
        print(list({w for w in words})[:3])  # differs between seeds
        print(call_key(len, ({w for w in words}, frozenset(words[:4])), {}))
    """))
    runs = [_run_script(script, seed).splitlines() for seed in ("0", "1", "2", "3", "99")]
    assert len({r[1] for r in runs}) == 1
    assert call_key(len, ({1, 2, 3},), {}) == call_key(len, ({3, 2, 1},), {})
    assert call_key(len, ({1, 2, 3},), {}) != call_key(len, (frozenset({1, 2, 3}),), {})


# -- values ----------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: float
    labels: set


class Holder:
    def __init__(self, items):
        self.items = items


def test_value_kinds_are_stable_and_distinct():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    values = [None, 0, "", b"", (), [], {}, set(), frozenset(), 0.0, -0.0, 1j, "0", False,
              (1, 2), [1, 2], ((1,), 2), (1, (2,)), Color.RED, Color.BLUE,
              Point(1.0, {"a"}), Point(1.0, {"b"}), Path("/a/b"), Path("/a/c"),
              datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.datetime(2024, 1, 2, tzinfo=tz),
              datetime.date(2024, 1, 2), datetime.timedelta(seconds=3),
              decimal.Decimal("1.0"), decimal.Decimal("1.00"), fractions.Fraction(1, 3),
              Holder({"x", "y"}), Holder([1]), os, Point, add, bytearray(b"a"), b"a", ...]
    keys = [call_key(len, (v,), {}) for v in values]
    assert len(set(keys)) == len(values)
    assert keys == [call_key(len, (v,), {}) for v in values]


def test_object_holding_a_set_is_stable_across_seeds(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent("""
        from balsam_futures.cache_key import call_key
        class Holder:
            def __init__(self):
                self.tags = {"one", "two", "three", "four", "five"}
                self.nested = [frozenset({"x", "y", "z"})]
        print(call_key(len, (Holder(),), {}))
    """))
    assert len({_run_script(script, seed) for seed in ("5", "6", "7")}) == 1


def test_numpy_arrays():
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype=np.int64)
    assert call_key(len, (a,), {}) == call_key(len, (a.copy(),), {})
    assert call_key(len, (a,), {}) != call_key(len, (a.reshape(2, 3),), {})
    assert call_key(len, (a,), {}) != call_key(len, (a.astype(np.int32),), {})
    b = a.copy()
    b[0] = 9
    assert call_key(len, (a,), {}) != call_key(len, (b,), {})
    assert call_key(len, (a[::2],), {}) == call_key(len, (np.array([0, 2, 4]),), {})
    assert call_key(len, (np.float64(1.5),), {}) != call_key(len, (1.5,), {})
    objs = np.array([{"k"}, None], dtype=object)
    assert call_key(len, (objs,), {}) == call_key(len, (objs.copy(),), {})


def test_cycles_are_hashed():
    a: list = [1]
    a.append(a)
    b: list = [1]
    b.append(b)
    assert call_key(len, (a,), {}) == call_key(len, (b,), {})


def test_version_changes_key():
    keys = [call_key(add, (1,), {}, version=v) for v in (None, "", 0, "1", "2", 1)]
    assert len(set(keys)) == len(keys)
    assert call_key(add, (1,), {}) == keys[0]


# -- refusals --------------------------------------------------------------------------------


def _refused(args=(), kwargs=None, **options) -> str:
    with pytest.raises(CacheKeyError) as info:
        call_key(add, args, kwargs or {}, **options)
    assert isinstance(info.value, ValueError) and isinstance(info.value, BalsamFuturesError)
    return str(info.value)


def test_generator_refused_naming_argument():
    message = _refused((1, (i for i in range(3))))
    assert "argument 2 (a generator)" in message
    assert "submit without cache" in message


def test_lock_file_iterator_refused(tmp_path):
    assert "argument 1 (a lock)" in _refused((threading.Lock(),))
    assert "argument 1 (a lock)" in _refused((threading.RLock(),))
    with open(tmp_path / "f.txt", "w") as f:
        assert "keyword argument 'out'" in _refused((), {"out": f})
    assert "an iterator" in _refused((iter([1, 2]),))


def test_nested_refusal_says_where():
    message = _refused((1,), {"cfg": {"lock": [0, threading.Lock()]}})
    assert "keyword argument 'cfg' at ['lock'][1] (a lock)" in message
    assert "inside a Holder" in _refused((Holder(threading.Lock()),))


def test_unpicklable_object_refused_with_pickle_error():
    class Odd:
        def __reduce__(self):
            raise TypeError("no way")

    message = _refused((1, 2, Odd()))
    assert "argument 3" in message and "cannot be pickled" in message and "no way" in message


def test_module_level_lock_read_by_function_is_not_data():
    mod = _compile("import threading\nGUARD = threading.Lock()\n"
                   "def work(x):\n    with GUARD:\n        return x\n")
    assert call_key(mod.work, (1,), {}) == call_key(mod.work, (1,), {})


def test_bad_global_named():
    mod = _compile("import types\nGEN = (i for i in range(3))\nSTATE = [GEN]\n"
                   "def work(x):\n    return STATE\n")
    with pytest.raises(CacheKeyError, match="the callable -> the global 'STATE' read by work"):
        call_key(mod.work, (1,), {})


def test_future_needs_future_key():
    fut: Future = Future()
    assert "argument 1 (a Future)" in _refused((fut,))
    seen = []

    def future_key(f):
        seen.append(f)
        return "parent-key-1"

    key = call_key(add, (fut,), {}, future_key=future_key)
    assert seen == [fut]
    assert key == call_key(add, (Future(),), {}, future_key=future_key)
    assert key != call_key(add, (Future(),), {}, future_key=lambda f: "parent-key-2")
    assert key != call_key(add, ("parent-key-1",), {})


def test_future_key_may_refuse():
    def refuse(f):
        raise CacheKeyError("cache=True: the parent task has no cache key")

    with pytest.raises(CacheKeyError, match="parent task has no cache key"):
        call_key(add, ([Future()],), {}, future_key=refuse)


# -- shell apps ------------------------------------------------------------------------------


def test_shell_key(tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("one")
    app = ShellApp("cat {x}", inputs=[str(data)])
    key = shell_key(app, {"x": "in.txt"})
    assert len(key) == KEY_LENGTH
    assert shell_key(ShellApp("cat {x}", inputs=[str(data)]), {"x": "in.txt"}) == key
    assert shell_key(ShellApp("cat -n {x}", inputs=[str(data)]), {"x": "in.txt"}) != key
    assert shell_key(app, {"x": "other.txt"}) != key
    assert shell_key(app, {"x": "in.txt"}, version=2) != key
    assert shell_key(ShellApp("cat {x}", inputs=[str(data)], env={"A": "1"}),
                     {"x": "in.txt"}) != key
    # Where it runs and how inputs arrive do not change the result.
    assert shell_key(ShellApp("cat {x}", inputs=[str(data)], link=True,
                              workdir=str(tmp_path / "w{id}")), {"x": "in.txt"}) == key
    data.write_text("two")
    assert shell_key(app, {"x": "in.txt"}) != key
    data.write_text("one")
    assert shell_key(app, {"x": "in.txt"}) == key


def test_shell_key_globs_and_directories(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "deep.dat").write_text("1")
    (tmp_path / "a.csv").write_text("a")
    app = ShellApp("ls", inputs={"cfg": str(tmp_path / "d"), "tables": str(tmp_path / "*.csv")})
    key = shell_key(app, {})
    (tmp_path / "d" / "sub" / "deep.dat").write_text("2")
    assert shell_key(app, {}) != key
    key = shell_key(app, {})
    (tmp_path / "b.csv").write_text("b")  # a new match of the pattern
    assert shell_key(app, {}) != key


def test_shell_path_param_contents(tmp_path):
    data = tmp_path / "p.txt"
    data.write_text("1")
    app = ShellApp("cat {x}")
    key = shell_key(app, {"x": data})
    data.write_text("2")
    assert shell_key(app, {"x": data}) != key
    assert shell_key(app, {"x": str(data)}) != shell_key(app, {"x": data})


def test_shell_hooks(tmp_path):
    def pre(ctx):
        return None

    def pre2(ctx):
        return 1

    key = shell_key(ShellApp("true", preprocess=pre), {})
    assert key == shell_key(ShellApp("true", preprocess=pre), {})
    assert key != shell_key(ShellApp("true", preprocess=pre2), {})
    assert key != shell_key(ShellApp("true", postprocess=pre), {})
    assert key != shell_key(ShellApp("true", preprocess=pre, parent_outputs=("*.out",)), {})


def test_shell_missing_input(tmp_path):
    app = ShellApp("cat {x}", inputs=[str(tmp_path / "missing.txt")])
    with pytest.raises(CacheKeyError, match="missing.txt"):
        shell_key(app, {"x": "missing.txt"})
    with pytest.raises(CacheKeyError, match="no file matches"):
        shell_key(ShellApp("cat", inputs=[str(tmp_path / "*.none")]), {})


def test_shell_future_param():
    app = ShellApp("echo {x}")
    with pytest.raises(CacheKeyError, match="parameter 'x' \\(a Future\\)"):
        shell_key(app, {"x": Future()})
    assert shell_key(app, {"x": Future()}, future_key=lambda f: "k") \
        == shell_key(app, {"x": Future()}, future_key=lambda f: "k")
