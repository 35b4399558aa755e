"""Payloads, results and exceptions as bytes.

A Python task's payload is the callable pickled on its own, then ``(args, kwargs)`` pickled.
Pickling the callable once lets ``map`` reuse it for every item and lets a warm worker keep
the unpickled callable in a small cache keyed by those bytes, so a lambda is rebuilt once per
worker, not once per task.

Exceptions travel as the original exception (with its traceback, via tblib) plus the formatted
traceback text, marked with where the task ran.  If the exception cannot be rebuilt in the
master, :class:`~balsam_futures.errors.RemoteError` carries its type name and the text instead.
"""

from __future__ import annotations

import pickle
import struct
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle
from tblib import pickling_support

from . import config
from .errors import PayloadError, PayloadTooLarge, RemoteError, RemoteTraceback

#: How many unpickled callables a worker keeps.  A campaign usually submits one or a few
#: callables; a larger cache only holds memory for closures that will not come back.
CALLABLE_CACHE_SIZE = 32


_LEN = struct.Struct("!I")


def _limit() -> int:
    return config.setting("MAX_PAYLOAD_BYTES")


def _dumps(obj: Any, what: str) -> bytes:
    # The standard pickler is ~20x faster than cloudpickle's, and gives the same bytes for
    # what both pickle by reference (module-level functions, builtins, plain data).  It is
    # wrong only where cloudpickle pickles by value: objects from __main__ (the worker has
    # another __main__) and lambdas or local functions (which the standard pickler refuses).
    try:
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    else:
        if b"__main__" not in blob:
            return blob
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise PayloadError(f"cannot serialize {what}: {type(exc).__name__}: {exc}") from exc


def dump_callable(fn: Callable[..., Any]) -> bytes:
    """Pickle a callable on its own; raises PayloadError naming it if that is impossible."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    return _dumps(fn, f"the callable {getattr(fn, '__qualname__', fn)!r}")


def dump_call(fn_bytes: bytes, args: tuple, kwargs: dict) -> bytes:
    """The payload of one call; raises PayloadError or PayloadTooLarge at submit time.

    Layout: 4-byte length of the callable's bytes, the callable's bytes, then the pickled
    ``(args, kwargs)``; the callable is kept apart so it is pickled once per map and cached
    by the worker.
    """
    args_blob = _dumps((args, kwargs), "the arguments of the call")
    payload = _LEN.pack(len(fn_bytes)) + fn_bytes + args_blob
    if len(payload) > _limit():
        raise PayloadTooLarge(
            f"the serialized call is {len(payload):,} bytes, over the limit of {_limit():,} "
            f"({config.env_name('MAX_PAYLOAD_BYTES')}); pass a file path instead of the data"
        )
    return payload


class CallLoader:
    """Turns payloads back into calls, keeping recently used callables (worker side)."""

    def __init__(self, size: int = CALLABLE_CACHE_SIZE) -> None:
        self._size = size
        self._cache: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()

    def load(self, payload: bytes) -> tuple[Callable[..., Any], tuple, dict]:
        view = memoryview(payload)
        (size,) = _LEN.unpack_from(view)
        fn_bytes = bytes(view[_LEN.size:_LEN.size + size])
        args, kwargs = pickle.loads(view[_LEN.size + size:])
        fn = self._cache.get(fn_bytes)
        if fn is None:
            fn = pickle.loads(fn_bytes)
            self._cache[fn_bytes] = fn
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(fn_bytes)
        return fn, args, kwargs


def dump_result(value: Any) -> bytes:
    """Pickle a task's return value (worker side)."""
    blob = _dumps(value, f"the result of type {type(value).__name__}")
    if len(blob) > _limit():
        raise PayloadTooLarge(
            f"the result is {len(blob):,} bytes, over the limit of {_limit():,} "
            f"({config.env_name('MAX_PAYLOAD_BYTES')}); write large results to files"
        )
    return blob


def load_result(blob: bytes) -> Any:
    return pickle.loads(blob)


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or ``<unprintable T object>`` where that raises (as Python 2's traceback
    printed it): a task's broken ``__str__`` must not lose the task's error."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001 - whatever __str__ raises, the error still goes back
        return f"<unprintable {type(exc).__name__} object>"


def _traceback_text(exc: BaseException) -> str:
    """The formatted traceback of ``exc``.  ``traceback`` survives an ``__str__`` raising an
    Exception ("<exception str() failed>"), not one raising a BaseException, nor anything
    raising in an exception of the chain; then the frames and each type name do."""
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001 - the task's own error matters more than its text
        frames = "".join(traceback.format_tb(exc.__traceback__))
        return (f"Traceback (most recent call last):\n{frames}"
                f"{type(exc).__qualname__}: {exception_text(exc)}\n")


def dump_exception(exc: BaseException, where: str) -> bytes:
    """Pack an exception with its traceback; ``where`` names the task, host and launcher.

    Never raises for the exception's sake (its ``__str__`` may raise, it may not pickle): a
    worker that cannot pack a task's error would die of it, and report a crash instead.
    """
    text = f'\n"""\n{where}\n{_traceback_text(exc)}"""'
    exc_bytes: bytes | None
    try:
        pickling_support.install(exc)
        exc_bytes = cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        # Many exception classes pickle but do not unpickle (a custom __init__ with other
        # arguments); find out here, where the text can still be sent instead.
        pickle.loads(exc_bytes)
    except BaseException:  # noqa: BLE001 - a __reduce__ may raise anything: send the text
        exc_bytes = None
    return pickle.dumps(
        {
            "exc": exc_bytes,
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": exception_text(exc),
            "traceback": text,
        },
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def load_exception(blob: bytes, task_id: int | None = None) -> BaseException:
    """Rebuild a task's exception, with the remote traceback text as its ``__cause__``."""
    packed = pickle.loads(blob)
    if packed["exc"] is not None:
        try:
            exc = pickle.loads(packed["exc"])
        except Exception:
            pass
        else:
            exc.__cause__ = RemoteTraceback(packed["traceback"])
            return exc
    return RemoteError(packed["type"], packed["message"], packed["traceback"], task_id=task_id)


class ParentResult:
    """Stands in an argument for the result of another task (a future passed as an
    argument); the worker puts the result in its place before the call."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id

    def __reduce__(self):
        return (ParentResult, (self.task_id,))

    def __repr__(self) -> str:
        return f"<result of task {self.task_id}>"


#: Types that are never futures and hold none: their calls skip the search for futures.
_PLAIN = frozenset({int, float, complex, str, bytes, bool, type(None)})


def swap_futures(args: tuple, kwargs: dict, is_future, task_id_of) -> tuple[tuple, dict, list]:
    """Replace futures among the arguments (and one level inside lists, tuples and dicts)
    with ParentResult markers; returns the new args, kwargs and the task ids replaced."""
    if all(type(a) in _PLAIN for a in args) and all(type(v) in _PLAIN
                                                    for v in kwargs.values()):
        return args, kwargs, []  # the common case (map over numbers, names): nothing to look in
    found: list[int] = []

    def swap(value):
        if is_future(value):
            task_id = task_id_of(value)
            found.append(task_id)
            return ParentResult(task_id)
        return value

    def swap_in(value):
        if type(value) in (list, tuple):
            return type(value)(swap(v) for v in value)
        if type(value) is dict:
            return {k: swap(v) for k, v in value.items()}
        return swap(value)

    new_args = tuple(swap_in(a) for a in args)
    new_kwargs = {k: swap_in(v) for k, v in kwargs.items()}
    return new_args, new_kwargs, found


def fill_parent_results(args: tuple, kwargs: dict,
                        results: dict[int, bytes | None]) -> tuple[tuple, dict]:
    """Worker side: put each parent's result where its ParentResult marker stands."""

    def fill(value):
        if isinstance(value, ParentResult):
            blob = results.get(value.task_id)
            if blob is None:
                from .errors import DependencyError

                raise DependencyError(f"the result of task {value.task_id}, passed as an "
                                      "argument, is not available (it did not finish)",
                                      parent_id=value.task_id)
            return pickle.loads(blob)
        return value

    def fill_in(value):
        if type(value) in (list, tuple):
            return type(value)(fill(v) for v in value)
        if type(value) is dict:
            return {k: fill(v) for k, v in value.items()}
        return fill(value)

    return tuple(fill_in(a) for a in args), {k: fill_in(v) for k, v in kwargs.items()}
