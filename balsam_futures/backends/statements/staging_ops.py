"""Statements of data staging: what launchers' transfer threads claim, and the moves they
write when a transfer ends."""

from __future__ import annotations

from sqlalchemy import select, update

from ...tasks import HELD, TaskState
from ..schema import tasks
from .common import bound, in_states, tagged

#: What a transfer thread reads of a task: enough to find its working directory.
STAGING_COLUMNS = (tasks.c.id, tasks.c.name, tasks.c.tags, tasks.c.workdir, tasks.c.staging)


def select_awaiting_stage_in(tags: tuple[tuple[str, str], ...] = ()):
    """The first :limit tasks waiting for their inputs (with ``tags``), in claim order,
    locked (SKIP LOCKED: launchers pass over each other's)."""
    stmt = (select(*STAGING_COLUMNS).where(in_states([TaskState.AWAITING_STAGE_IN]))
            .with_for_update(skip_locked=True))
    return tagged(stmt, tags).order_by(tasks.c.priority.desc(), tasks.c.id).limit(bound("limit"))


def any_awaiting_stage_in(tags: tuple[tuple[str, str], ...] = ()):
    """One task waiting for its inputs (with ``tags``), if any: a read before a claim."""
    stmt = select(tasks.c.id).where(in_states([TaskState.AWAITING_STAGE_IN]))
    return tagged(stmt, tags).limit(1)


def mark_staging_in():
    """Task :b_id (AWAITING_STAGE_IN) is fetched by launcher :b_lid."""
    return (update(tasks)
            .where(tasks.c.id == bound("b_id"),
                   in_states([TaskState.AWAITING_STAGE_IN]))
            .values(state=TaskState.STAGING_IN.value, launcher_id=bound("b_lid"),
                    updated_at=bound("b_now")))


def select_staging_out_of():
    """The tasks launcher :lid holds in STAGING_OUT (their outputs are its to ship).  The
    held condition too, so that the held index serves it (not a scan every poll)."""
    return select(*STAGING_COLUMNS).where(
        tasks.c.launcher_id == bound("lid"), in_states(HELD),
        tasks.c.state == TaskState.STAGING_OUT.value)


def end_staging():
    """Task :b_id, held by launcher :b_lid in :b_from, moves to :b_state (with :b_error);
    :b_keep says whether it stays with that launcher (a finished one records who ran it,
    one released to READY is held by nobody)."""
    from sqlalchemy import case

    return (update(tasks)
            .where(tasks.c.id == bound("b_id"), tasks.c.state == bound("b_from"),
                   tasks.c.launcher_id == bound("b_lid"))
            .values(state=bound("b_state"), error=bound("b_error"),
                    launcher_id=case((bound("b_keep") == 1, tasks.c.launcher_id),
                                     else_=None),
                    updated_at=bound("b_now")))
