"""A call's dependencies, found at submit (executor.py): the futures among its arguments,
whose results take their place when the task runs, and the futures or task ids given as
``depends_on``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backends import ExecutorStore
from .futures import BalsamFuture
from .serialization import swap_futures


def call_dependencies(store: ExecutorStore, args: tuple, kwargs: dict,
                      depends_on: Sequence[Any]) -> tuple[tuple, dict, list[int]]:
    """``args`` and ``kwargs`` with their futures swapped for their results' places, and the
    ids of the tasks the call depends on: those futures' tasks, then ``depends_on``'s."""
    args, kwargs, parents = swap_futures(args, kwargs, _is_future, _dependency_id)
    if depends_on:
        given = [_dependency_id(d) for d in depends_on]
        _check_parents_exist(store, [d for d in depends_on if not _is_future(d)], given)
        parents.extend(given)
    return args, kwargs, parents


def _check_parents_exist(store: ExecutorStore, raw: list[Any], ids: list[int]) -> None:
    """Task ids given in depends_on must name tasks in the store (futures of this
    executor do by construction): one read, only for submissions that give ids."""
    if not raw:
        return
    wanted = sorted({d for d in raw})
    found = {e.task_id for e in store.task_outcomes(wanted)}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(
            f"depends_on names task id(s) not in the store {store.display_url}: "
            f"{', '.join(map(str, missing[:10]))}; give futures or ids of stored tasks")


def _is_future(value: Any) -> bool:
    return isinstance(value, BalsamFuture)


def _dependency_id(dep: Any) -> int:
    """The task id of a dependency given as a future or an id."""
    if isinstance(dep, BalsamFuture):
        task_id = dep.task_id  # waits until that task is stored
        if task_id is None:
            raise ValueError(f"{dep!r} was cancelled before it was stored; nothing can "
                             "depend on it")
        return task_id
    if isinstance(dep, int) and not isinstance(dep, bool):
        return dep
    raise TypeError(f"depends_on takes futures or task ids, not {type(dep).__name__}")
