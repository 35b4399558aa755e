"""Statements of run-time estimates: the table of estimates per kind, each task's expected run
time (filled in and refreshed from it), and what the claim order and the CLI read of them."""

from __future__ import annotations

from sqlalchemy import exists, func, select, text, update

from ...tasks import CLAIMABLE
from ..schema import estimate_key, kinds, meta, tasks
from .common import bound, in_states, tagged

#: The bf_meta row that holds the highest task id whose expected run time has been filled in.
WATERMARK_KEY = "estimated_through"


def claim_probe():
    """What a claim checks first, in one round trip: the fill watermark, the newest task id,
    when the oldest claimable task of the highest priority was created (the starvation
    guard; read from the head of ix_bf_tasks_claim, so one index entry), and whether any
    kind's estimate is long enough to be filled in (see ``fill_expected``)."""
    watermark = select(meta.c.value).where(meta.c.key == WATERMARK_KEY).scalar_subquery()
    newest = select(func.max(tasks.c.id)).scalar_subquery()
    oldest = (select(tasks.c.created_at).where(in_states(CLAIMABLE))
              .order_by(tasks.c.priority.desc(), tasks.c.id).limit(1).scalar_subquery())
    long_kinds = exists().where(kinds.c.p90_s >= bound("min_s"))
    return select(watermark, newest, oldest, long_kinds)


def fill_expected(skip_locked: bool = False):
    """Set the expected run time of tasks :lo < id <= :hi to their kind's estimate (its high
    quantile), where there is one and it differs: the others keep what they were created
    with (their timeout, else 0, unknown), and are not rewritten (on PostgreSQL an update of
    an indexed column writes a new row version and index entries).

    ``skip_locked`` (PostgreSQL): rows another transaction holds (a claim, an outcome) are
    skipped, not waited for: waiting on them inside a launcher's round trip deadlocked
    launchers that were learning estimates at the same time."""
    def estimate():
        return select(kinds.c.p90_s).where(kinds.c.key == estimate_key()).scalar_subquery()

    # Only the rows that change are picked, hence locked: a claim running beside this one
    # skips locked rows, and must not find the whole new backlog locked.
    picked = select(tasks.c.id).where(tasks.c.id > bound("lo"), tasks.c.id <= bound("hi"),
                                      estimate() != tasks.c.expected_s)
    if skip_locked:
        picked = picked.with_for_update(skip_locked=True)
    return update(tasks).where(tasks.c.id.in_(picked)).values(expected_s=estimate())


def set_watermark():
    """Record :hi as the highest task id whose expected run time is filled in."""
    return update(meta).where(meta.c.key == WATERMARK_KEY).values(value=bound("hi_text"))


def pg_try_fill_lock():
    """PostgreSQL: whether this transaction may fill in expected run times now (another
    launcher filling the same new rows would make this one wait on the watermark row)."""
    return text("SELECT pg_try_advisory_xact_lock(hashtext('bf_fill'))")


def pg_try_kind_lock():
    """PostgreSQL: whether this transaction may write the estimate of kind :lock_key now.
    Launchers finishing runs of one kind would otherwise queue on its bf_kinds row, each
    waiting for the others' whole round trips (and with other waits, deadlock)."""
    return text("SELECT pg_try_advisory_xact_lock(hashtext(:lock_key))")


def select_estimate_keys(ids: list[int]):
    """(id, estimate key) of tasks ``ids``."""
    return select(tasks.c.id, estimate_key()).where(tasks.c.id.in_(ids))


def select_kind():
    """(count, samples) of the estimate of kind :key."""
    return select(kinds.c.count, kinds.c.samples, kinds.c.p90_s).where(
        kinds.c.key == bound("key"))


def upsert_kind():
    """Write the estimate of kind :key (one statement on both dialects: a launcher that meets
    a new kind at the same time as another must not fail its round trip)."""
    return text(
        "INSERT INTO bf_kinds (key, count, median_s, p90_s, samples, updated_at) "
        "VALUES (:key, :count, :median, :p90, :samples, :now) "
        "ON CONFLICT (key) DO UPDATE SET count = excluded.count, "
        "median_s = excluded.median_s, p90_s = excluded.p90_s, samples = excluded.samples, "
        "updated_at = excluded.updated_at")


def refresh_expected(skip_locked: bool = False):
    """Set the expected run time of the first :limit claimable tasks of kind :key (in claim
    order: those that start soonest) to :expected.  Bounded, so that a kind with a million
    queued tasks does not hold a launcher's round trip for seconds; ``skip_locked`` as for
    ``fill_expected``."""
    picked = (select(tasks.c.id)
              .where(in_states(CLAIMABLE), estimate_key() == bound("key"))
              .order_by(tasks.c.priority.desc(), tasks.c.expected_s.desc(), tasks.c.id)
              .limit(bound("limit")))
    if skip_locked:
        picked = picked.with_for_update(skip_locked=True)
    return (update(tasks)
            .where(tasks.c.id.in_(picked))
            .values(expected_s=bound("new_expected")))


def select_kinds():
    """Every estimate: key, count, median, p90, updated_at, by key."""
    return select(kinds.c.key, kinds.c.count, kinds.c.median_s, kinds.c.p90_s,
                  kinds.c.updated_at).order_by(kinds.c.key)


def select_too_long(tags: tuple[tuple[str, str], ...] = ()):
    """Claimable tasks with ``tags`` whose expected run time exceeds :max_wall, by kind:
    (key, how many, shortest expected), first :limit kinds."""
    key = estimate_key()
    stmt = (select(key, func.count(), func.min(tasks.c.expected_s))
            .where(in_states(CLAIMABLE), tasks.c.expected_s > bound("max_wall")))
    return tagged(stmt, tags).group_by(key).order_by(key).limit(bound("limit"))


def backlog_work(tags: tuple[tuple[str, str], ...], max_nodes: int | None):
    """Over the claimable tasks carrying ``tags`` that fit jobs of ``max_nodes`` nodes: the
    node-seconds of those whose run time is expected (each task's share of a node, from its
    packing count or its cores on nodes of :cores cores, times its expected run time), the
    nodes of those whose run time is unknown, and the longest expected run time.  What the
    queue service sizes a job's nodes and wall time by."""
    from sqlalchemy import case

    fits = tasks.c.num_nodes <= max_nodes if max_nodes is not None else tasks.c.num_nodes > 0
    share = case(
        (tasks.c.node_packing_count > 0, tasks.c.num_nodes * 1.0 / tasks.c.node_packing_count),
        else_=tasks.c.num_nodes * tasks.c.ranks_per_node * tasks.c.threads_per_rank * 1.0
        / bound("cores"))
    known = tasks.c.expected_s > 0
    stmt = select(
        func.coalesce(func.sum(case((known, share * tasks.c.expected_s), else_=0.0)), 0.0),
        func.coalesce(func.sum(case((known, 0.0), else_=share)), 0.0),
        func.coalesce(func.max(tasks.c.expected_s), 0.0),
    ).where(in_states(CLAIMABLE), fits)
    return tagged(stmt, tags)


# -- what `explain` reads ---------------------------------------------------------------------


def select_explained_task():
    """The fields of task :id that say why it waits."""
    return select(tasks.c.id, tasks.c.name, estimate_key(), tasks.c.state, tasks.c.priority,
                  tasks.c.num_nodes, tasks.c.ranks_per_node, tasks.c.gpus_per_rank,
                  tasks.c.tags, tasks.c.expected_s, tasks.c.wall_time_s, tasks.c.launcher_id,
                  tasks.c.created_at).where(tasks.c.id == bound("id"))


def count_ahead():
    """How many claimable tasks come before one of priority :priority, :nodes nodes,
    expected run time :expected and id :id in claim order (read from ix_bf_tasks_order)."""
    from sqlalchemy import and_, or_

    p, n, e = tasks.c.priority, tasks.c.num_nodes, tasks.c.expected_s
    return select(func.count()).where(in_states(CLAIMABLE), or_(
        p > bound("priority"),
        and_(p == bound("priority"), or_(
            n > bound("nodes"),
            and_(n == bound("nodes"), or_(
                e > bound("expected"),
                and_(e == bound("expected"), tasks.c.id < bound("id"))))))))


def select_live_launchers():
    """Launchers recorded as RUNNING: id, info, started_at, heartbeat_at, lease_s."""
    from ..schema import launchers

    return select(launchers.c.id, launchers.c.info, launchers.c.started_at,
                  launchers.c.heartbeat_at, launchers.c.lease_s).where(
        launchers.c.state == "RUNNING").order_by(launchers.c.id)
