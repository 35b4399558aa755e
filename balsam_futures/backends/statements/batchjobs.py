"""Statements on batch jobs (``bf_batch_jobs``) and the backlog the queue service sizes them by."""

from __future__ import annotations

from sqlalchemy import case, func, insert, select, update

from ...tasks import CLAIMABLE, TaskState
from ..schema import batch_jobs, tasks
from .common import bound, in_literals, in_states, tagged

#: Columns written when a batch job is created (the database draws the id).
BATCH_JOB_INSERT_COLUMNS = tuple(c.name for c in batch_jobs.c if c.name != "id")


def insert_batch_job():
    """Insert one batch job, returning its id."""
    return (insert(batch_jobs)
            .values({c: bound(c) for c in BATCH_JOB_INSERT_COLUMNS})
            .returning(batch_jobs.c.id))


def select_batch_jobs(ids: list[int] | None, states: tuple[str, ...] | None):
    """Batch job rows, oldest first: all, or those with ``ids`` and/or in ``states``."""
    stmt = select(batch_jobs)
    if ids is not None:
        stmt = stmt.where(batch_jobs.c.id.in_(ids))
    if states is not None:
        stmt = stmt.where(in_literals(batch_jobs.c.state, states))
    return stmt.order_by(batch_jobs.c.id)


def update_batch_job(columns: tuple[str, ...], from_states: tuple[str, ...] | None):
    """Set ``columns`` (bound as :v_<column>) on batch job :b_id, only while its state is in
    ``from_states`` (when given): the row count tells whether it was."""
    stmt = update(batch_jobs).where(batch_jobs.c.id == bound("b_id"))
    if from_states is not None:
        stmt = stmt.where(in_literals(batch_jobs.c.state, from_states))
    return stmt.values({c: bound(f"v_{c}") for c in columns})


def backlog_summary(tags: tuple[tuple[str, str], ...], max_nodes: int | None):
    """Over the claimable tasks carrying ``tags`` that fit jobs of ``max_nodes`` nodes: their
    count, the nodes needed by those with a packing count, the cores needed by those without,
    the nodes of the largest; and the count of those too large.  What the queue service sizes
    launcher jobs by."""
    # (num_nodes > 0 holds for every task: the condition without a limit.)
    fits = tasks.c.num_nodes <= max_nodes if max_nodes is not None else tasks.c.num_nodes > 0
    packed = tasks.c.node_packing_count > 0

    def over_fitting(value):
        return func.coalesce(func.sum(case((fits, value), else_=0)), 0)

    stmt = select(
        over_fitting(1),
        over_fitting(case((packed, tasks.c.num_nodes * 1.0 / tasks.c.node_packing_count),
                          else_=0)),
        over_fitting(case((packed, 0), else_=tasks.c.num_nodes * tasks.c.ranks_per_node
                          * tasks.c.threads_per_rank)),
        func.coalesce(func.max(case((fits, tasks.c.num_nodes))), 0),
        func.count() - over_fitting(1),
    # Tasks waiting for their inputs need a launcher too (its transfer thread fetches them).
    ).where(in_states(CLAIMABLE | {TaskState.AWAITING_STAGE_IN}))
    return tagged(stmt, tags)
