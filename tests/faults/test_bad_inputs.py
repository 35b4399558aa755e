"""Bad submissions are refused one by one, and never cost the good tasks around them.

The writer thread stores whatever queued up in one transaction, so a value the database
refuses used to lose the whole batch, or kill the thread.  Every case here submits 3 good
tasks, attempts one bad input, submits 3 more, then checks that all 6 good tasks are stored
and finished.  A bad input is expected to fail where the user can see it: at ``submit``
(most), in its own future (``result``) or as the command line's exit code (``cli``), with a
message that names the field.

Run with ``-s`` to see the table of every input, the error seen and where, printed when the
module ends.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest

from balsam_futures import BalsamExecutor, Resources, ShellApp, validation
from balsam_futures.errors import DependencyError, PayloadError, PayloadTooLarge

pytestmark = pytest.mark.timeout(60)

RESULT_TIMEOUT = 30
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

SUBMIT, RESULT, CLI = "submit", "result", "cli"
#: Refused at submit or, by the writer, in the bad task's own future: either is fine.
SUBMIT_OR_RESULT = "submit|result"


@dataclass(frozen=True)
class Bad:
    shown: str  # the bad input, as the test id and the table show it
    attempt: Callable[[BalsamExecutor], Any]  # submits it: raises, or returns a future
    error: type[BaseException] | int  # what the user sees; an exit code for CLI cases
    match: tuple[str, ...]  # substrings of the message, naming the field
    where: str = SUBMIT


#: (backend, input, error seen, where, message, good tasks) per case run, for the table.
SEEN: list[tuple[str, str, str, str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def summary_table():
    yield
    header = ("backend", "bad input", "error", "where", "message", "good tasks")
    rows = [header, *SEEN]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(cell[:w].ljust(w) for cell, w in zip(row, widths)) for row in rows]
    print(f"\n{len(SEEN)} bad inputs tried (each between 3 good tasks and 3 more, unless said):")
    print("\n".join(lines))


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    """One executor for the SQLite cases: each case also checks it is still healthy."""
    executor = BalsamExecutor(max_workers=2, site=tmp_path_factory.mktemp("bad") / "site")
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


def _options(**changes: Any) -> Callable[[BalsamExecutor], Any]:
    return lambda ex: ex.options(**changes).submit(pow, 2, 2)


def _resources(**fields: Any) -> Callable[[BalsamExecutor], Any]:
    return lambda ex: ex.options(resources=Resources(**fields)).submit(pow, 2, 2)


def _shell(app: ShellApp, *args: Any, **params: Any) -> Callable[[BalsamExecutor], Any]:
    return lambda ex: ex.submit(app, *args, **params)


def _nested(depth: int, leaf: Any) -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"n": value}
    return value


def _cyclic() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


def _failed_parent(ex: BalsamExecutor) -> Any:
    parent = ex.submit(divmod, 1, 0)  # ZeroDivisionError
    return ex.options(depends_on=[parent]).submit(pow, 2, 2)


def _too_large(ex: BalsamExecutor) -> Any:
    with mock.patch.dict(os.environ, {"BALSAM_FUTURES_MAX_PAYLOAD_BYTES": "1000"}):
        return ex.submit(len, b"x" * 2000)


def _modify(change: str) -> Callable[[BalsamExecutor], Any]:
    """``balsam-futures modify ID change`` on a finished task of this executor."""

    def attempt(ex: BalsamExecutor) -> Any:
        from click.testing import CliRunner

        from balsam_futures.cli import main

        fut = ex.submit(pow, 2, 2)
        fut.result(timeout=RESULT_TIMEOUT)
        return CliRunner().invoke(main, ["modify", "--site", str(ex.site), str(fut.task_id),
                                         change])

    return attempt


def _int_cases() -> list[Bad]:
    """Every int column a user sets: over and under the 32-bit range, and not an int."""
    minimums = {"num_nodes": 1, "ranks_per_node": 1, "threads_per_rank": 1,
                "gpus_per_rank": 0, "node_packing_count": 0, "max_retries": 0,
                "priority": INT32_MIN}
    cases = []
    for field, minimum in minimums.items():
        make = _options if field in ("max_retries", "priority") else _resources
        in_range = (f"{field} must be >= {minimum} and <= {INT32_MAX}",)
        not_int = (f"{field} must be an int",)
        cases += [
            Bad(f"{field}=2**31", make(**{field: 2**31}), ValueError, in_range),
            Bad(f"{field}=-2**31-1", make(**{field: INT32_MIN - 1}), ValueError, in_range),
            Bad(f"{field}=True", make(**{field: True}), TypeError, not_int),
            Bad(f"{field}=2.0", make(**{field: 2.0}), TypeError, not_int),
            Bad(f"{field}='3'", make(**{field: "3"}), TypeError, not_int),
        ]
    # The issue's two: each used to kill the writer thread on SQLite.
    cases += [
        Bad("priority=2**63", _options(priority=2**63), ValueError,
            ("priority must be >= -2147483648 and <= 2147483647 (a 32-bit signed int), "
             "got 9223372036854775808",)),
        Bad("max_retries=2**70", _options(max_retries=2**70), ValueError,
            ("max_retries must be >= 0 and <= 2147483647",)),
        Bad("priority=10**5000", _options(priority=10**5000), ValueError,
            ("priority must be", "an int of")),
    ]
    return cases


TIMEOUT_RANGE = ("timeout must be > 0 and <= 2147483647 seconds",)
TIMEOUT_CASES = [
    Bad("timeout=nan", _options(timeout=math.nan), ValueError, TIMEOUT_RANGE),
    Bad("timeout=inf", _options(timeout=math.inf), ValueError, TIMEOUT_RANGE),
    Bad("timeout=-inf", _options(timeout=-math.inf), ValueError, TIMEOUT_RANGE),
    Bad("timeout=-1", _options(timeout=-1), ValueError, TIMEOUT_RANGE),
    Bad("timeout=0", _options(timeout=0), ValueError, TIMEOUT_RANGE),
    Bad("timeout=1e300", _options(timeout=1e300), ValueError, TIMEOUT_RANGE),
    Bad("timeout=2**1100 (past float)", _options(timeout=2**1100), ValueError, TIMEOUT_RANGE),
    Bad("timeout='10'", _options(timeout="10"), TypeError, ("timeout must be a number",)),
    Bad("timeout=True", _options(timeout=True), TypeError, ("timeout must be a number",)),
]

NAME_CASES = [
    Bad("name=257 chars", _options(name="n" * 257), ValueError,
        ("name is 257 characters long", "at most 256")),
    Bad("name with NUL", _options(name="a\0b"), ValueError, ("name contains a NUL",)),
    Bad("name with lone surrogate", _options(name="a\ud800"), ValueError,
        ("name is not valid Unicode",)),
    Bad("name=42", _options(name=42), TypeError, ("name must be a str",)),
    Bad("ShellApp name=300 chars", _shell(ShellApp("true", name="s" * 300)), ValueError,
        ("name is 300 characters long",)),
    Bad("ShellApp name with NUL", _shell(ShellApp("true", name="a\0b")), ValueError,
        ("name contains a NUL",)),
    Bad("description with NUL", _options(description="line\0"), ValueError,
        ("description contains a NUL",)),
    Bad("description=3", _options(description=3), TypeError, ("description must be a str",)),
]

TAG_CASES = [
    Bad("tags={1: 'a'}", _options(tags={1: "a"}), TypeError, ("tags must be", "key 1")),
    Bad("tags={'a': 1}", _options(tags={"a": 1}), TypeError, ("tags['a'] is a int",)),
    Bad("tags={'a': None}", _options(tags={"a": None}), TypeError, ("tags['a']",)),
    Bad("tag key with NUL", _options(tags={"a\0": "x"}), ValueError,
        ("tag key 'a\\x00' contains a NUL",)),
    Bad("tag value with NUL", _options(tags={"a": "x\0"}), ValueError,
        ("tags['a'] contains a NUL",)),
    Bad("tag key 257 chars", _options(tags={"k" * 257: "v"}), ValueError,
        ("tag key", "257 characters long")),
    Bad("tag value 257 chars", _options(tags={"a": "v" * 257}), ValueError,
        ("tags['a'] is 257 characters long",)),
    Bad("tags='a=b'", _options(tags="a=b"), TypeError, ("tags must be a mapping",)),
]

DATA_CASES = [
    Bad("data['x']=nan", _options(data={"x": math.nan}), ValueError,
        ("data['x'] is nan", "JSON")),
    Bad("data['a'][2]=inf", _options(data={"a": [1, 2, math.inf]}), ValueError,
        ("data['a'][2] is inf",)),
    Bad("data['a']['b']['c']=-inf", _options(data={"a": {"b": {"c": -math.inf}}}), ValueError,
        ("data['a']['b']['c'] is -inf",)),
    Bad("data nan at depth 10", _options(data=_nested(10, [math.nan])), ValueError,
        ("data" + "['n']" * 10 + "[0] is nan",)),
    Bad("data key with NUL", _options(data={"k\0": 1}), ValueError,
        ("a key of data ('k\\x00') contains a NUL",)),
    Bad("data value with NUL", _options(data={"a": ["ok", "x\0"]}), ValueError,
        ("data['a'][1] contains a NUL",)),
    Bad("data value lone surrogate", _options(data={"u": "\udc80"}), ValueError,
        ("data['u'] is not valid Unicode",)),
    Bad("data key nan", _options(data={math.nan: 1}), ValueError, ("data has the key nan",)),
    Bad("data key tuple", _options(data={(1, 2): 1}), TypeError,
        ("data has a key of type tuple",)),
    Bad("data set", _options(data={"s": {1, 2}}), TypeError,
        ("data['s'] is a set", "JSON")),
    Bad("data object", _options(data={"o": object()}), TypeError,
        ("data['o'] is a object", "JSON")),
    Bad("data bytes", _options(data={"b": b"x"}), TypeError, ("data['b'] is a bytes",)),
    Bad("data 100 levels deep", _options(data=_nested(100, 1)), ValueError,
        ("nested more than 64 levels",)),
    Bad("data refers to itself", _options(data=_cyclic()), ValueError,
        ("nested more than 64 levels", "refers to itself")),
    Bad("data int of 5000 digits", _options(data={"big": 10**5000}), ValueError,
        ("data must be JSON-serializable",)),
    Bad("data=[1, 2]", _options(data=[1, 2]), TypeError, ("data must be a JSON",)),
]

WORKDIR_CASES = [
    Bad("workdir='../x'", _options(workdir="../x"), ValueError, ("workdir must not contain",)),
    Bad("workdir='a/../b'", _options(workdir="a/../b"), ValueError,
        ("workdir must not contain",)),
    Bad("workdir with NUL", _options(workdir="a\0b"), ValueError, ("workdir contains a NUL",)),
    Bad("workdir=''", _options(workdir=""), ValueError, ("workdir must be a non-empty",)),
    Bad("workdir=3", _options(workdir=3), TypeError, ("workdir must be a non-empty",)),
]

DEPENDS_CASES = [
    Bad("depends_on='12'", _options(depends_on="12"), TypeError,
        ("depends_on must be a list",)),
    Bad("depends_on=42", _options(depends_on=42), TypeError, ("depends_on must be a list",)),
    Bad("depends_on=[1.5]", _options(depends_on=[1.5]), TypeError,
        ("depends_on[0] must be a future or a task id",)),
    Bad("depends_on=[True]", _options(depends_on=[True]), TypeError,
        ("depends_on[0] must be a future or a task id",)),
    Bad("depends_on=[0]", _options(depends_on=[0]), ValueError,
        ("depends_on[0] must be a task id between 1 and 2147483647",)),
    Bad("depends_on=[2**31]", _options(depends_on=[2**31]), ValueError,
        ("depends_on[0] must be a task id between 1 and 2147483647",)),
    Bad("depends_on=[1, -5]", _options(depends_on=[1, -5]), ValueError,
        ("depends_on[1] must be a task id",)),
    Bad("depends_on a failed task", _failed_parent, DependencyError, ("did not run",), RESULT),
]

OTHER_CASES = [
    Bad("auto_timeout_retry='yes'", _options(auto_timeout_retry="yes"), TypeError,
        ("auto_timeout_retry must be True or False",)),
    Bad("allow_parent_failure=1", _options(allow_parent_failure=1), TypeError,
        ("allow_parent_failure must be True or False",)),
    Bad("resources={'num_nodes': 2}", _options(resources={"num_nodes": 2}), TypeError,
        ("resources must be a balsam_futures.Resources",)),
    Bad("unknown option retries=3", _options(retries=3), TypeError,
        ("unknown task option 'retries'", "max_retries")),
    Bad("unknown option Name='x'", _options(Name="x"), TypeError,
        ("unknown task option 'Name'",)),
    Bad("unpicklable callable", lambda ex: ex.submit(threading.Lock().acquire), PayloadError,
        ("cannot serialize the callable",)),
    Bad("unpicklable argument", lambda ex: ex.submit(pow, threading.Lock(), 2), PayloadError,
        ("cannot serialize the arguments",)),
    Bad("payload over MAX_PAYLOAD_BYTES", _too_large, PayloadTooLarge,
        ("over the limit", "MAX_PAYLOAD_BYTES")),
    Bad("unpicklable result", lambda ex: ex.submit(threading.Lock), PayloadError,
        ("lock",), RESULT),
]

SHELL = ShellApp("echo {x}")
SHELL_CASES = [
    Bad("ShellApp parameter with NUL", _shell(SHELL, x="a\0b"), ValueError,
        ("parameter 'x' contains a NUL",)),
    Bad("ShellApp unknown parameter", _shell(SHELL, x=1, y=2), TypeError,
        ("unknown parameter(s): y",)),
    Bad("ShellApp missing parameter", _shell(SHELL), TypeError,
        ("missing parameter(s): x",)),
    Bad("ShellApp positional argument", _shell(SHELL, 1), TypeError,
        ("takes its parameters by keyword",)),
    Bad("ShellApp list parameter", _shell(SHELL, x=[1, 2]), TypeError,
        ("parameter 'x' must be a str",)),
]

CLI_CASES = [
    pytest.param(Bad("modify num_nodes=abc", _modify("num_nodes=abc"), 1,
                     ("num_nodes must be an integer",), CLI), id="modify num_nodes=abc"),
    pytest.param(Bad("modify priority=2**31", _modify("priority=2147483648"), 1,
                     ("priority",), CLI), id="modify priority=2**31"),
    pytest.param(Bad("modify name=300 chars", _modify("name=" + "n" * 300), 1,
                     ("name",), CLI), id="modify name=300 chars"),
]

UNKNOWN_PARENT = Bad("depends_on=[999999]", _options(depends_on=[999999]), ValueError,
                     ("999999",), SUBMIT_OR_RESULT)

CASES = [pytest.param(c, id=c.shown) for c in [
    *_int_cases(), *TIMEOUT_CASES, *NAME_CASES, *TAG_CASES, *DATA_CASES, *WORKDIR_CASES,
    *DEPENDS_CASES, *OTHER_CASES, *SHELL_CASES]] + CLI_CASES


# --------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------


def _good(ex: BalsamExecutor, first: int) -> list[Any]:
    return [ex.submit(pow, i, 2) for i in range(first, first + 3)]


def _check_message(case: Bad, message: str) -> None:
    for part in case.match:
        assert part in message, f"{part!r} is not in the message: {message}"


def _attempt(ex: BalsamExecutor, case: Bad, accepted: list[Any]) -> tuple[str, str, str]:
    """Submit the bad input; returns (error type, where it was seen, message).  A future the
    submit returned goes into ``accepted``."""
    if case.where == CLI:
        result = case.attempt(ex)
        assert result.exit_code == case.error, result.output
        _check_message(case, result.output)
        return f"exit {result.exit_code}", CLI, result.output.strip()
    try:
        fut = case.attempt(ex)
    except Exception as exc:
        assert case.where in (SUBMIT, SUBMIT_OR_RESULT), f"raised at submit: {exc!r}"
        exc_seen, where = exc, SUBMIT
    else:
        accepted.append(fut)
        assert case.where in (RESULT, SUBMIT_OR_RESULT), f"accepted at submit: {fut!r}"
        exc_seen, where = fut.exception(timeout=RESULT_TIMEOUT), RESULT
        assert exc_seen is not None, "the bad task succeeded"
    assert isinstance(exc_seen, case.error), f"{type(exc_seen).__name__}: {exc_seen}"
    _check_message(case, str(exc_seen))
    return type(exc_seen).__name__, where, str(exc_seen)


def _check_good(ex: BalsamExecutor, futs: list[Any]) -> None:
    """Every good task gave its result and is stored as finished."""
    assert [f.result(timeout=RESULT_TIMEOUT) for f in futs] == [i * i for i in range(6)]
    ids = [f.task_id for f in futs]
    assert ex.tasks().filter(id__in=ids).by_state() == {"JOB_FINISHED": 6}


def run_case(ex: BalsamExecutor, case: Bad, backend: str) -> None:
    error, where, message, good = "-", "-", "", "FAILED"
    accepted: list[Any] = []
    try:
        before = _good(ex, 0)
        error, where, message = _attempt(ex, case, accepted)
        after = _good(ex, 3)
        _check_good(ex, before + after)
        good = "6/6 finished"
    finally:
        SEEN.append((backend, case.shown, error, where, message.splitlines()[0] if message
                     else "", good))
        # A bad task the writer cannot store would hold up every later batch: withdrawing it
        # lets the executor go on (and shut down) whatever this case found.
        for fut in accepted:
            fut.cancel()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_alone(ex, case):
    run_case(ex, case, "sqlite")




def test_unknown_parent_id_is_refused_alone(make_executor):
    # Its own executor: before this was checked, such a task wedged the writer for good.
    run_case(make_executor(max_workers=2), UNKNOWN_PARENT, "sqlite")


def test_a_derived_name_is_cut_not_refused(ex):
    _check_derived_names(ex)


def _check_derived_names(ex: BalsamExecutor) -> None:
    """A name taken from the callable or the program is made to fit: the task runs."""
    fn = lambda x: x + 1  # noqa: E731 - pickled by value, whatever its __qualname__ says
    fn.__qualname__ = "outer.<locals>." + "q" * 300 + "\0end"
    fut = ex.submit(fn, 1)
    assert fut.result(timeout=RESULT_TIMEOUT) == 2
    name = ex.tasks().filter(id=fut.task_id).first()["name"]
    assert len(name) == validation.NAME_MAX_LENGTH
    assert name.startswith("...") and name.endswith("q?end")
    program = "/opt/" + "p" * 300
    shell = ex.submit(ShellApp(f"{program} --flag"))
    # No file has a name that long (ENAMETOOLONG): the run fails, but the task was stored.
    assert isinstance(shell.exception(timeout=RESULT_TIMEOUT), OSError)
    name = ex.tasks().filter(id=shell.task_id).first()["name"]
    assert name == "..." + "p" * (validation.NAME_MAX_LENGTH - 3)
    SEEN.append((_backend(ex), "derived name of 300+ chars", "-", "stored", name[:20] + "...",
                 "ran"))


def _backend(ex: BalsamExecutor) -> str:
    return "postgres" if ex.store.display_url.startswith("postgresql") else "sqlite"


def _a_batch_around_bad_inputs(ex: BalsamExecutor, bad: list[dict[str, Any]]) -> None:
    """The issue's scenario: 100 good submits, the bad ones, 100 more, then flush."""
    futs = [ex.submit(pow, i, 2) for i in range(100)]
    for changes in bad:
        with pytest.raises((ValueError, TypeError)):
            ex.options(**changes).submit(pow, 2, 2)
    futs += [ex.submit(pow, i, 2) for i in range(100, 200)]
    assert ex.flush(timeout=RESULT_TIMEOUT)
    assert all(f.task_id is not None for f in futs)
    assert ex.store.count_by_state() == {"READY": 200}
    SEEN.append((_backend(ex), f"{len(bad)} bad among 200 good, launcher=False", "refused",
                 SUBMIT, ", ".join(sorted({k for c in bad for k in c})), "200/200 stored"))


ISSUE_BAD_INPUTS = [{"priority": 2**63}, {"max_retries": 2**70}, {"name": "n" * 300},
                    {"data": {"x": math.nan}}, {"priority": 2**31},
                    {"description": "a\0"}, {"tags": {"t": "a\0"}}]


def test_the_issue_batch_is_stored_whole(make_executor):
    _a_batch_around_bad_inputs(make_executor(launcher=False), ISSUE_BAD_INPUTS)


def test_limits_match_the_schema():
    from sqlalchemy import Float, Integer

    from balsam_futures.backends.schema import tasks

    assert tasks.c.name.type.length == validation.NAME_MAX_LENGTH
    for column in ("num_nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank",
                   "node_packing_count", "max_retries", "priority", "id", "parent_id"):
        assert isinstance(tasks.c[column].type, Integer), column
    assert isinstance(tasks.c.wall_time_s.type, Float)
    assert (validation.INT32_MIN, validation.INT32_MAX) == (INT32_MIN, INT32_MAX)


# --------------------------------------------------------------------------------------------
# PostgreSQL: where the database itself refuses these values
# --------------------------------------------------------------------------------------------

PG_CASES = [pytest.param(c, id=c.shown) for c in [
    *[c for c in _int_cases() if c.shown in ("priority=2**31", "max_retries=2**70",
                                            "num_nodes=2**31")],
    *[c for c in NAME_CASES if c.shown in ("name=257 chars", "name with NUL",
                                           "name with lone surrogate", "description with NUL",
                                           "ShellApp name=300 chars")],
    *[c for c in TAG_CASES if c.shown in ("tag key with NUL", "tag value with NUL")],
    *[c for c in DATA_CASES if c.shown in ("data['x']=nan", "data['a'][2]=inf",
                                           "data value with NUL")],
    *[c for c in WORKDIR_CASES if c.shown == "workdir with NUL"],
]]


@pytest.fixture
def pg_ex(pg_url, tmp_path):
    executor = BalsamExecutor(max_workers=2, db_url=pg_url, site=tmp_path / "site")
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


@pytest.mark.postgres
@pytest.mark.parametrize("case", PG_CASES)
def test_bad_input_is_refused_alone_on_postgres(pg_ex, case):
    run_case(pg_ex, case, "postgres")


@pytest.mark.postgres
def test_unknown_parent_id_is_refused_alone_on_postgres(pg_ex):
    run_case(pg_ex, UNKNOWN_PARENT, "postgres")


@pytest.mark.postgres
def test_a_derived_name_is_cut_not_refused_on_postgres(pg_ex):
    _check_derived_names(pg_ex)


@pytest.mark.postgres
def test_the_issue_batch_is_stored_whole_on_postgres(pg_url, tmp_path):
    executor = BalsamExecutor(db_url=pg_url, site=tmp_path / "site", launcher=False)
    try:
        _a_batch_around_bad_inputs(executor, ISSUE_BAD_INPUTS)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
