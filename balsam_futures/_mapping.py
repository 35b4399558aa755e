"""``map()`` for executor.py: the call each task of a map makes, and its results in order.

    map(fn, *iterables)               one task per call: fn(*args)
    map(fn, *iterables, chunksize=n)  one task per n calls: _process_chunk(fn, chunk)
    map(app, [{"x": 1}, ...])         one task per command (a ShellApp; chunksize ignored)

The executor stores the tasks in batches of MAP_BATCH; ``result_iterator`` yields their
results in order, as ``concurrent.futures.Executor.map`` does.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .apps import ShellApp, _run_shell_task
from .futures import BalsamFuture
from .serialization import dump_callable
from .tasks import TaskOptions
from .validation import choose_name

#: Tasks per transaction in ``map``.  Bounds the memory of one insert and lets the launcher
#: start on the first chunk while the next one is written.
MAP_BATCH = 10_000


def _process_chunk(fn: Callable[..., Any], chunk: list[tuple]) -> list[Any]:
    """Run one ``map`` chunk in a worker (as ProcessPoolExecutor's _process_chunk)."""
    return [fn(*args) for args in chunk]


def task_name(fn: Any) -> str:
    """The name of the tasks that call ``fn``: its qualified name."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(fn, functools.partial):
        return task_name(fn.func)
    return name or type(fn).__name__


def map_calls(options: TaskOptions, fn: Any, iterables: Sequence[Iterable[Any]],
              chunksize: int) -> tuple[str, bytes, Iterator[tuple[tuple, dict]], int]:
    """What the tasks of ``map(fn, *iterables)`` store: their name, the callable (pickled
    once, not per task), the (args, kwargs) of each task, lazily, and the chunk size in
    effect (1 for a ShellApp)."""
    if isinstance(fn, ShellApp):
        app = fn
        name = choose_name(options.name or app.name, app.default_name)
        fn_bytes = dump_callable(_run_shell_task)  # once, not per task
        chunksize = 1  # one task per command: see BalsamExecutor.map
        calls = (((), params) for params in _shell_params(app, iterables))
    elif chunksize == 1:
        name = choose_name(options.name, task_name(fn))
        fn_bytes = dump_callable(fn)
        calls = ((args, {}) for args in zip(*iterables))
    else:
        name = choose_name(options.name, task_name(fn))
        fn_bytes = dump_callable(functools.partial(_process_chunk, fn))
        it = zip(*iterables)
        calls = (((chunk,), {})
                 for chunk in iter(lambda: list(itertools.islice(it, chunksize)), []))
    return name, fn_bytes, calls, chunksize


def _shell_params(app: ShellApp, iterables: Sequence[Iterable[Any]]) -> Iterator[dict]:
    """The parameters of each task of ``map(app, iterable)``: an item is a mapping of them,
    or the value of the app's only parameter.  Positional values for several parameters
    are refused rather than matched to them by their order in the command line, which
    would change meaning when the template is edited."""
    params = sorted(app.params)
    example = "map(app, [{" + ", ".join(f"{p!r}: ..." for p in params) + "}, ...])"
    if len(iterables) != 1:
        raise TypeError(f"map() of ShellApp {app.default_name!r} takes one iterable, of "
                        f"mappings of its parameters ({', '.join(params) or 'none'}), not "
                        f"{len(iterables)}: e.g. {example}")
    only = params[0] if len(params) == 1 else None
    for item in iterables[0]:
        if isinstance(item, Mapping):
            yield dict(item)
        elif only is not None:
            yield {only: item}
        else:
            raise TypeError(f"map() of ShellApp {app.default_name!r} takes mappings of its "
                            f"parameters ({', '.join(params) or 'none'}), not "
                            f"{type(item).__name__} values: e.g. {example}")


def result_iterator(futs: list[BalsamFuture], end_time: float | None) -> Iterator[Any]:
    """The results of ``futs`` in order, each waited for until ``end_time`` (monotonic)."""
    # As concurrent.futures._base.Executor.map: yield in order, cancel the rest on close.
    try:
        futs.reverse()
        while futs:
            fut = futs.pop()
            if end_time is None:
                yield fut.result()
            else:
                yield fut.result(end_time - time.monotonic())
    finally:
        for fut in futs:
            fut.cancel()
