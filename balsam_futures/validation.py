"""What a task row can hold, checked at ``submit`` so that the writer thread never meets a
value the database refuses.

    submit() ── TaskOptions / Resources ── check_* here (ValueError / TypeError) ──> queue
                                                                       writer thread ──> store

The writer stores a whole batch of submissions in one transaction, so one value the database
rejects used to lose the batch (and a Python ``OverflowError`` from the driver killed the
thread).  Every rule below is pure: no store is needed.  One rule holds on both backends,
although SQLite alone is more lenient, so that a campaign moved to PostgreSQL keeps working:

- every Integer column is a 32-bit signed int (PostgreSQL ``integer``; SQLite's are 64-bit);
- text holds no NUL (PostgreSQL text and ``json ->>`` refuse it) and no lone surrogate (no
  UTF-8 encoder takes one), and ``bf_tasks.name`` is ``String(256)``;
- JSON holds no NaN or infinity (neither database's JSON accepts them: one such row breaks
  every ``data__`` filter on SQLite) and nothing ``json`` cannot encode.

The limits mirror ``backends/schema.py``; this module does not import it, because the
backends import ``tasks.py``, which calls in here (imports point one way).  A test compares
the two.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

#: The range of a PostgreSQL ``integer``, used for every Integer column on both backends.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: ``bf_tasks.name`` is ``String(256)``: PostgreSQL refuses a longer name.
NAME_MAX_LENGTH = 256
#: Tag keys and values are labels that claims and ``ls --tag`` compare for equality, as short
#: as names; a longer value belongs in ``data=``.
TAG_MAX_LENGTH = 256
#: ``data__KEY`` filters reach top-level keys only; nesting this deep is a mistake or a cycle,
#: and each level costs a frame of recursion in the JSON encoders (Python's, the databases').
DATA_MAX_DEPTH = 64
#: ``timeout`` ends up in timers and int conversions downstream (``threading`` waits
#: overflow near 2**63 ns); 68 years is past any allocation and safe for all of them.
TIMEOUT_MAX_S = float(INT32_MAX)
#: Task ids are positive (autoincrement from 1) and stored in Integer columns.
TASK_ID_MIN = 1

_INT_RANGE = "a 32-bit signed int"
#: Ellipsis marking a derived name cut to NAME_MAX_LENGTH.
_CUT = "..."


def check_int(name: str, value: Any, minimum: int = INT32_MIN, maximum: int = INT32_MAX) -> int:
    """``value`` as a column int: an int (not bool) within ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be >= {minimum} and <= {maximum} ({_INT_RANGE}), "
                         f"got {_short(value)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A Boolean column: SQLAlchemy refuses anything but a bool (or 0/1) in the writer."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


def text_problem(text: str) -> str | None:
    """Why no database stores ``text`` as it is, or None if it can."""
    if "\0" in text:
        return f"contains a NUL character at index {text.index(chr(0))}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode (a lone surrogate at index {exc.start})"
    return None


def check_text(field: str, value: Any, max_length: int | None = None) -> str:
    """A text value: a str without NUL or lone surrogates, at most ``max_length`` long."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{field} {problem}, which the task store cannot hold")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{field} is {len(value)} characters long; the task store keeps at "
                         f"most {max_length}")
    return value


def check_name(value: Any, field: str = "name") -> str:
    """A task name the user gave: refused, not cut, when the store cannot keep it."""
    return check_text(field, value, NAME_MAX_LENGTH)


def choose_name(given: str | None, derived: Any) -> str:
    """The name a task is stored under: ``given`` (checked) if set, else ``derived``.

    A name derived from the callable (a ``__qualname__`` such as ``f.<locals>.g``, a
    program's path) was not chosen by the user, so it is made storable rather than refused:
    NULs and lone surrogates become ``?`` and a long one keeps its end, where the function's
    own name is, after ``...``.
    """
    if given:
        return check_name(given)
    text = str(derived).replace("\0", "?")
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > NAME_MAX_LENGTH:
        text = _CUT + text[-(NAME_MAX_LENGTH - len(_CUT)):]
    return text


def check_tags(tags: Any) -> None:
    """Tags map str to str; each key and value is storable text of TAG_MAX_LENGTH or less."""
    if not isinstance(tags, Mapping):
        raise TypeError("tags must be a mapping of str to str, e.g. {'experiment': 'xpcs'}, "
                        f"not {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str):
            raise TypeError(f"tags must be a mapping of str to str: the key {_short(key)} is "
                            f"a {type(key).__name__}")
        check_text(f"the tag key {_short(key)}", key, TAG_MAX_LENGTH)
        if not isinstance(value, str):
            raise TypeError(f"tags must be a mapping of str to str: tags[{_short(key)}] is a "
                            f"{type(value).__name__}")
        check_text(f"tags[{_short(key)}]", value, TAG_MAX_LENGTH)


def check_data(data: Any) -> None:
    """``data`` is a mapping that JSON holds exactly: no NaN or infinity, no NUL, not too
    deep; the error names the path of the first bad value, e.g. ``data['a'][2]``."""
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a JSON-serializable mapping, not {type(data).__name__}")
    _check_json(dict(data), "data", 0)
    try:  # what the walk cannot see, e.g. an int past Python's 4300-digit str limit
        json.dumps(dict(data), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"data must be JSON-serializable: {exc}") from None


def _check_json(value: Any, path: str, depth: int) -> None:
    # The types json.dumps encodes (subclasses included); bool is an int.
    if value is None or isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value}, which JSON cannot hold (allow_nan=False); "
                             "use None or a finite number")
        return
    if isinstance(value, str):
        check_text(path, value)
        return
    if depth >= DATA_MAX_DEPTH and isinstance(value, (list, tuple, dict)):
        raise ValueError(f"data is nested more than {DATA_MAX_DEPTH} levels deep at {path} "
                         "(or refers to itself)")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json_key(key, path)
            _check_json(item, f"{path}[{key!r}]", depth + 1)
        return
    raise TypeError(f"{path} is a {type(value).__name__}, which is not JSON-serializable "
                    "(str, int, float, bool, None, list or dict)")


def _check_json_key(key: Any, path: str) -> None:
    """A JSON object key: json.dumps writes str, int, float, bool and None keys as str."""
    if isinstance(key, str):
        check_text(f"a key of {path} ({key!r})", key)
    elif isinstance(key, float) and not math.isfinite(key):
        raise ValueError(f"{path} has the key {key}, which JSON cannot hold")
    elif not (key is None or isinstance(key, (int, float))):
        raise TypeError(f"{path} has a key of type {type(key).__name__}: JSON-serializable "
                        "keys are str (or int, float, bool, None, written as str)")


def check_timeout(value: Any) -> float | None:
    """A wall time in seconds as the float the ``wall_time_s`` column stores, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int past the float range
        seconds = math.inf
    if not (0 < seconds <= TIMEOUT_MAX_S):  # False for NaN as well
        raise ValueError(f"timeout must be > 0 and <= {TIMEOUT_MAX_S:.0f} seconds, got "
                         f"{_short(value)}")
    return seconds


def check_workdir(value: Any) -> str | None:
    """A working directory: None, or a non-empty path string without NUL or ``..``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"workdir must be a non-empty path string, not {type(value).__name__}")
    if not value:
        raise ValueError("workdir must be a non-empty path string (None for the default)")
    check_text("workdir", value)
    if ".." in value.split("/"):
        raise ValueError(f"workdir must not contain '..': {value!r}")
    return value


def check_depends_on(deps: Any) -> tuple[Any, ...]:
    """``depends_on`` as a tuple of futures and task ids; an id must be a storable one."""
    if isinstance(deps, (str, bytes)) or not isinstance(deps, Sequence):
        raise TypeError(f"depends_on must be a list of futures or task ids, not "
                        f"{type(deps).__name__}")
    deps = tuple(deps)
    for i, dep in enumerate(deps):
        if isinstance(dep, Future):
            continue  # its id is known once it is stored; the executor resolves it
        if isinstance(dep, bool) or not isinstance(dep, int):
            raise TypeError(f"depends_on[{i}] must be a future or a task id (an int), not "
                            f"{type(dep).__name__}")
        if not TASK_ID_MIN <= dep <= INT32_MAX:
            raise ValueError(f"depends_on[{i}] must be a task id between {TASK_ID_MIN} and "
                             f"{INT32_MAX}, got {dep}")
    return deps


def _short(value: Any, limit: int = 40) -> str:
    """``value`` for a message: a 300-digit int is not helpful in full (and past 4300
    digits ``repr`` itself raises)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
