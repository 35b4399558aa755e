"""Statements for what users and the command line ask of a store: filtered tasks
(``balsam_futures.query``), their rows and histories, counts, launchers and runs."""

from __future__ import annotations

from sqlalchemy import func, select, update

from ..schema import history, launchers, runs, tasks
from .common import bound, in_states, tag
from .lifecycle import RUN_FIELDS

#: Task columns a query may filter, order or update by.
QUERY_COLUMNS = frozenset(
    c.name for c in tasks.c if c.name not in ("payload", "result", "error", "tags", "data"))
QUERY_OPS = {
    "eq": lambda col, v: col == v,
    "ne": lambda col, v: col != v,
    "lt": lambda col, v: col < v,
    "le": lambda col, v: col <= v,
    "gt": lambda col, v: col > v,
    "ge": lambda col, v: col >= v,
    "in": lambda col, v: col.in_(list(v)),
    "not_in": lambda col, v: col.not_in(list(v)),
    "contains": lambda col, v: col.contains(v, autoescape=True),
    "startswith": lambda col, v: col.startswith(v, autoescape=True),
}


def _condition(field: str, op: str, value):
    if field.startswith("tags."):
        col = tag(field[5:])
    elif field.startswith("data."):
        key = field[5:]
        probe = next(iter(value), None) if op == "in" else value
        if isinstance(probe, bool):
            col = tasks.c.data[key].as_boolean()
        elif isinstance(probe, (int, float)):
            col = tasks.c.data[key].as_float()
        else:
            col = tasks.c.data[key].as_string()
    else:
        col = tasks.c[field]
    return QUERY_OPS[op](col, value)


def _filtered(stmt, filters):
    for field, op, value in filters:
        stmt = stmt.where(_condition(field, op, value))
    return stmt


def query_select(filters, order: tuple[str, ...], limit: int | None):
    """Rows (without payloads) of the tasks matching ``filters``."""
    cols = [c for c in tasks.c if c.name not in ("payload",)]
    stmt = _filtered(select(*cols), filters)
    for name in order or ("id",):
        col = tasks.c[name.lstrip("-")]
        stmt = stmt.order_by(col.desc() if name.startswith("-") else col)
    return stmt.limit(limit) if limit is not None else stmt


def query_count_by_state(filters):
    """(state, count) of the tasks matching ``filters``."""
    return _filtered(select(tasks.c.state, func.count()), filters).group_by(tasks.c.state)


def query_lock_ids(filters, states=None):
    """(id, state) of the tasks matching ``filters`` (and in ``states``), locked."""
    stmt = _filtered(select(tasks.c.id, tasks.c.state), filters)
    if states is not None:
        stmt = stmt.where(in_states(states))
    return stmt.order_by(tasks.c.id).with_for_update()


def query_update(ids: list[int], values: dict):
    """Set ``values`` on tasks ``ids``."""
    return update(tasks).where(tasks.c.id.in_(ids)).values(**values, updated_at=bound("now"))


def select_task_rows(ids: list[int]):
    """Full rows of tasks ``ids`` (without payloads)."""
    cols = [c for c in tasks.c if c.name != "payload"]
    return select(*cols).where(tasks.c.id.in_(ids))


def select_history(task_id: int):
    """Every state change of one task, oldest first."""
    return (
        select(history.c.id, history.c.from_state, history.c.to_state, history.c.at,
               history.c.message)
        .where(history.c.task_id == task_id)
        .order_by(history.c.id)
    )


def select_histories(task_ids: list[int]):
    """Every state change of tasks ``task_ids``, oldest first, each with its task's id."""
    return (
        select(history.c.task_id, history.c.id, history.c.from_state, history.c.to_state,
               history.c.at, history.c.message)
        .where(history.c.task_id.in_(task_ids))
        .order_by(history.c.id)
    )


def count_by_state():
    """(state, count) for every state present."""
    return select(tasks.c.state, func.count()).group_by(tasks.c.state)


def select_launchers():
    """Every launcher with its recorded resources (info) and life span."""
    return select(launchers.c.id, launchers.c.hostname, launchers.c.state,
                  launchers.c.started_at, launchers.c.heartbeat_at, launchers.c.info,
                  launchers.c.batch_job_id).order_by(launchers.c.id)


def select_runs():
    """Runs that overlap [:start, :end], oldest first (utilization and throughput)."""
    return (select(*(runs.c[k] for k in RUN_FIELDS))
            .where(runs.c.ended_at >= bound("start"), runs.c.started_at <= bound("end"))
            .order_by(runs.c.started_at))



def select_payload(task_id: int):
    """The payload of one task (``show`` reads its callable and arguments)."""
    return select(tasks.c.kind, tasks.c.payload).where(tasks.c.id == task_id)


def query_failed_page(filters, limit: int):
    """(id, error, updated_at) of FAILED tasks matching ``filters`` with id > :after, the
    first ``limit`` by id: one page of the failure triage (a range scan of the primary key,
    so each page costs its own rows whatever the table's size)."""
    stmt = _filtered(select(tasks.c.id, tasks.c.error, tasks.c.updated_at), filters)
    return (stmt.where(tasks.c.state == "FAILED", tasks.c.id > bound("after"))
            .order_by(tasks.c.id).limit(limit))


def select_slowest_names():
    """(task name, runs, mean and longest run seconds) of runs that ended since :since, the
    :limit slowest on average (the ended_at index bounds the runs read)."""
    took = runs.c.ended_at - runs.c.started_at
    return (select(tasks.c.name, func.count(), func.avg(took), func.max(took))
            .select_from(runs.join(tasks, tasks.c.id == runs.c.task_id))
            .where(runs.c.ended_at >= bound("since"))
            .group_by(tasks.c.name)
            .order_by(func.avg(took).desc())
            .limit(bound("limit")))
