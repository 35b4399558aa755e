"""What the statement modules build with: bind placeholders, state lists and tag filters."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam

from ...tasks import TaskState
from ..schema import state_in, tasks


def bound(name: str):
    """A bind parameter with a placeholder value, so the statement can be compiled once with
    its constant IN lists expanded (see RawStatement); every caller passes the real value."""
    return bindparam(name, None)


def in_literals(column, values: Iterable[str]):
    """``column IN (values)``, the values rendered as literals, not parameters."""
    return column.in_(bindparam("states", list(values), expanding=True, literal_execute=True))


def in_states(states: Iterable[TaskState]):
    """The task's state is one of ``states``."""
    # Literals: SQLite uses a partial index only when the query's WHERE names the same
    # constants as the index's (https://sqlite.org/partialindex.html); the same form as the
    # indexes' (schema.state_in).
    return state_in(sorted(s.value for s in states))


def tag(key: str):
    """The task's tag ``key``, as text."""
    return tasks.c.tags[key].as_string()


def tagged(stmt, tags: Iterable[tuple[str, str | tuple[str, ...]]]):
    """``stmt`` narrowed to the tasks that carry every key of ``tags`` with its value, or
    one of its values when given several (a tuple: ``--tag exp=a --tag exp=b``)."""
    for key, value in tags:
        if isinstance(value, tuple):
            stmt = stmt.where(tag(key).in_(value))
        else:
            stmt = stmt.where(tag(key) == value)
    return stmt
