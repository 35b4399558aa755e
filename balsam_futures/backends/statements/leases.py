"""Statements on launchers: registration, heartbeats, leases, and the sweep that gives back
what dead launchers held."""

from __future__ import annotations

from sqlalchemy import case, insert, select, update

from ...tasks import HELD, LauncherState, TaskState
from ..schema import launchers, tasks
from .common import bound, in_states


def insert_launcher():
    """Register a launcher, returning its id."""
    cols = ("hostname", "pid", "state", "started_at", "heartbeat_at", "info", "batch_job_id",
            "lease_s")
    return insert(launchers).values({c: bound(c) for c in cols}).returning(launchers.c.id)


def _alive(now, blocked=None):
    # A launcher is alive while it is RUNNING and its own lease has not run out, counted
    # from its last heartbeat, or from when the store was last blocked for every writer
    # (:blocked), whichever is later: nobody could renew a lease while it was.
    since = launchers.c.heartbeat_at if blocked is None else case(
        (launchers.c.heartbeat_at > blocked, launchers.c.heartbeat_at), else_=blocked)
    return (launchers.c.state == LauncherState.RUNNING.value) & (
        since + launchers.c.lease_s >= now)


def touch_launcher():
    """Heartbeat of launcher :lid at :now, only if it was alive at :asked (when it began this
    round trip, before any wait for the write lock); returns its id if so (no row: its lease
    ran out, it is fenced)."""
    return (
        update(launchers)
        .where(launchers.c.id == bound("lid"), _alive(bound("asked")))
        .values(heartbeat_at=bound("now"))
        .returning(launchers.c.id)
    )


def set_launcher_state():
    """Set the state of launcher :lid (e.g. STOPPED)."""
    return (
        update(launchers)
        .where(launchers.c.id == bound("lid"))
        .values(state=bound("state"), heartbeat_at=bound("now"))
    )


def select_expired_launchers():
    """Launchers still marked RUNNING whose own lease ran out before :now (counted from
    their heartbeat or the store's last blockage :blocked, see ``_alive``)."""
    return select(launchers.c.id).where(
        launchers.c.state == LauncherState.RUNNING.value,
        ~_alive(bound("now"), bound("blocked")),
    )


def select_orphaned_launchers():
    """Launchers that hold tasks (CLAIMED or RUNNING) but are not alive at :now, whatever
    their recorded state (a launcher marked STOPPED may have claimed after it was)."""
    alive = select(launchers.c.id).where(_alive(bound("now"), bound("blocked")))
    return (select(tasks.c.launcher_id).distinct()
            .where(in_states(HELD), tasks.c.launcher_id.not_in(alive.scalar_subquery())))


def lock_held_by(launcher_ids: list[int]):
    """(id, state) of the tasks held (CLAIMED or RUNNING) by ``launcher_ids``, locked."""
    return (
        select(tasks.c.id, tasks.c.state)
        .where(tasks.c.launcher_id.in_(launcher_ids), in_states(HELD))
        .order_by(tasks.c.id)
        .with_for_update()
    )


#: Where a held task goes when its launcher gives it back or is lost: one never started to
#: READY, one whose inputs were being fetched to wait for them again, one that ran (RUNNING,
#: or STAGING_OUT: its outputs may be gone with its node) to RESTART_READY.
REQUEUED_TO = {TaskState.CLAIMED: TaskState.READY,
               TaskState.STAGING_IN: TaskState.AWAITING_STAGE_IN,
               TaskState.RUNNING: TaskState.RESTART_READY,
               TaskState.STAGING_OUT: TaskState.RESTART_READY}


def requeue(ids: list[int]):
    """Give held tasks ``ids`` back, each to its state in REQUEUED_TO."""
    return (
        update(tasks)
        .where(tasks.c.id.in_(ids), in_states(HELD))
        .values(state=case(*[(tasks.c.state == held.value, back.value)
                             for held, back in REQUEUED_TO.items()
                             if back is not TaskState.RESTART_READY],
                           else_=TaskState.RESTART_READY.value),
                launcher_id=None, kill_requested=False, updated_at=bound("now"))
    )
