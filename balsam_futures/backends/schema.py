"""The tables of a task store (SQLAlchemy Core; the same schema on SQLite and PostgreSQL).

Times are float seconds since the epoch: cheap to write in bulk and the same on both dialects.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
)

from ..tasks import CLAIMABLE, HELD, TaskState

metadata = MetaData()

meta = Table(
    "bf_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

tasks = Table(
    "bf_tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("kind", String(16), nullable=False),
    Column("state", String(20), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("data", JSON, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("num_nodes", Integer, nullable=False),
    Column("ranks_per_node", Integer, nullable=False),
    Column("threads_per_rank", Integer, nullable=False),
    Column("gpus_per_rank", Integer, nullable=False),
    Column("node_packing_count", Integer, nullable=False),
    Column("wall_time_s", Float),
    Column("max_retries", Integer, nullable=False),
    Column("num_restarts", Integer, nullable=False, default=0),
    Column("auto_timeout_retry", Boolean, nullable=False),
    Column("priority", Integer, nullable=False),
    # Set by a kill request for a RUNNING task; its launcher sees it and stops the run.
    Column("kill_requested", Boolean, nullable=False, default=False),
    # The task that submitted this one from inside its run (dynamic workflows), if any.
    Column("parent_id", Integer),
    # How many tasks this one depends on (rows in bf_dependencies), and whether it runs even
    # if one of them fails; a launcher fetches parents' results only when num_parents > 0.
    Column("num_parents", Integer, nullable=False, default=0),
    Column("allow_parent_failure", Boolean, nullable=False, default=False),
    Column("workdir", Text),
    Column("launcher_id", Integer),
    Column("result", LargeBinary),
    Column("error", LargeBinary),
    Column("return_code", Integer),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Run-time estimates (version 4).  ``label``: the ``kind=`` option, when given; a task's
    # estimate key is its label, else its name (see estimate_key).  ``expected_s``: its
    # expected run time: its timeout when created; its kind's high quantile once a claim
    # has seen it (estimates.py), refreshed when that estimate moves.  0 means unknown: it
    # sorts last, and a column without NULLs sorts the same on both dialects (SQLite has no
    # NULLS LAST in an index).
    Column("label", String(256)),
    Column("expected_s", Float, nullable=False, default=0.0),
    # Memoization and data staging (version 5).  ``cache_key``: the call's key when it was
    # submitted with cache= (cache_key.py); ``cached_from``: the task whose result it took,
    # or follows while that one runs (NULL: it ran, or will run, itself).  ``staging``: its
    # stage_in and stage_out lists ({"in": [[url, dest]...], "out": [[pattern, url]...]}).
    Column("cache_key", String(64)),
    Column("cached_from", Integer),
    Column("staging", JSON),
    # Never reuse the id of a deleted task: futures and history refer to tasks by id.
    sqlite_autoincrement=True,
)

def state_in(values: list[str]):
    """``state`` is one of ``values`` (constants), as partial indexes and the queries that
    use them both write it (SQLite uses a partial index only for a query whose WHERE repeats
    the index's condition).  Three values or more are an OR of equalities, not an IN list:
    SQLite evaluates an IN list of three or more through a temporary table, for every row
    inserted into a table with such a partial index (1.5 us a row: a bulk insert 25 % slower
    with the held index over four states); an OR chain costs nothing."""
    from sqlalchemy import literal, or_

    if len(values) > 2:
        return or_(*[tasks.c.state == literal(v, literal_execute=True) for v in values])
    return tasks.c.state.in_(bindparam("states", list(values), expanding=True,
                                       literal_execute=True))


_claimable = tasks.c.state.in_(
    bindparam("states", sorted(s.value for s in CLAIMABLE), expanding=True, literal_execute=True))
# A partial index over claimable rows only, in claim order: a claim reads the first N entries
# whatever the number of finished rows, and the index stays as small as the backlog.
Index(
    "ix_bf_tasks_claim",
    tasks.c.priority.desc(),
    tasks.c.id,
    sqlite_where=_claimable,
    postgresql_where=_claimable,
)
# Claim order (version 4, widest first since version 6).  Within a priority, the most nodes
# first, then longest expected run first, unknown last, then submission order; the same
# partial index keeps a claim reading its first N entries.  The index above stays: the
# starvation guard reads the oldest claimable task from it.
Index(
    "ix_bf_tasks_order",
    tasks.c.priority.desc(),
    tasks.c.num_nodes.desc(),
    tasks.c.expected_s.desc(),
    tasks.c.id,
    sqlite_where=_claimable,
    postgresql_where=_claimable,
)
# No plain index on state: with one, SQLite's planner (which has no statistics) picked it for
# claims and sorted every claimable row, so a claim cost O(backlog) instead of O(limit).
# The tasks held under a launcher's lease (CLAIMED or RUNNING), by launcher: what a sweep
# requeues and a launcher's kill poll reads; as small as the work in flight (version 3).
_held = state_in(sorted(s.value for s in HELD))
Index("ix_bf_tasks_held", tasks.c.launcher_id, sqlite_where=_held, postgresql_where=_held)
# Version 5: what launchers' transfer threads claim (tasks waiting for their inputs), in
# claim order; as small as that backlog.
_awaiting_stage_in = state_in([TaskState.AWAITING_STAGE_IN.value])
Index("ix_bf_tasks_stage_in", tasks.c.priority.desc(), tasks.c.id,
      sqlite_where=_awaiting_stage_in, postgresql_where=_awaiting_stage_in)
# Version 5: tasks submitted with cache=, by key (hit and miss counts, ``show``).
_cached = tasks.c.cache_key.isnot(None)
Index("ix_bf_tasks_cache_key", tasks.c.cache_key, sqlite_where=_cached,
      postgresql_where=_cached)

history = Table(
    "bf_history",
    metadata,
    # Monotonic ids (AUTOINCREMENT on SQLite: never reused) are the watchers' event cursor.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("bf_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("at", Float, nullable=False),
    Column("message", Text, nullable=False, default=""),
    sqlite_autoincrement=True,
)
Index("ix_bf_history_task", history.c.task_id)

dependencies = Table(
    "bf_dependencies",
    metadata,
    Column("child_id", Integer, ForeignKey("bf_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("parent_id", Integer, ForeignKey("bf_tasks.id", ondelete="CASCADE"), primary_key=True),
)
Index("ix_bf_dependencies_parent", dependencies.c.parent_id)

launchers = Table(
    "bf_launchers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hostname", String(256), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("info", JSON, nullable=False),
    Column("batch_job_id", Integer),  # the batch job it runs in, if any (version 2)
    # Its own lease (version 3): it is alive while heartbeat_at + lease_s is not past, and
    # everyone judges it by this value, not by their own setting.
    Column("lease_s", Float, nullable=False, default=30.0),
    sqlite_autoincrement=True,
)

# -- schema version 2 -------------------------------------------------------------------------

runs = Table(
    "bf_runs",
    metadata,
    # The execution profile: one row per run of a task (where and when it ran).  Written with
    # the run's outcome, in the same transaction; utilization and throughput are read from it.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("bf_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("launcher_id", Integer, nullable=False),
    Column("hosts", JSON, nullable=False),  # node names, one per node the run held
    Column("gpus", JSON, nullable=False),  # GPU ids it held on each of those nodes
    Column("num_nodes", Integer, nullable=False),
    Column("cores", Integer, nullable=False),  # cores held per node
    Column("node_share", Float, nullable=False),  # fraction of each node held (1/packing)
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("state", String(20), nullable=False),  # the state the run ended in
    sqlite_autoincrement=True,
)
Index("ix_bf_runs_task", runs.c.task_id)
Index("ix_bf_runs_ended", runs.c.ended_at)

batch_jobs = Table(
    "bf_batch_jobs",
    metadata,
    # Launcher jobs submitted to a batch scheduler (Balsam's BatchJob).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scheduler", String(16), nullable=False),  # local, slurm, pbs, cobalt, lsf, flux
    Column("scheduler_id", String(64)),  # the scheduler's own job id, once submitted
    Column("project", String(128), nullable=False, default=""),
    Column("queue", String(128), nullable=False, default=""),
    Column("num_nodes", Integer, nullable=False),
    Column("wall_time_min", Integer, nullable=False),
    Column("job_mode", String(16), nullable=False),  # serial or mpi
    Column("filter_tags", JSON, nullable=False),  # the launcher serves only these tags
    Column("options", JSON, nullable=False),  # template extras (pre-run commands...)
    Column("state", String(24), nullable=False),
    Column("status_info", JSON, nullable=False),  # what the scheduler last said
    Column("error", Text, nullable=False, default=""),  # the scheduler's words on a failure
    Column("script_path", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    sqlite_autoincrement=True,
)
Index("ix_bf_batch_jobs_state", batch_jobs.c.state)


# -- schema version 4 -------------------------------------------------------------------------

kinds = Table(
    "bf_kinds",
    metadata,
    # Run-time estimates, one row per kind of task (estimate key), learned from its finished
    # runs in the transaction that records them: the last RESERVOIR durations (a bounded,
    # sliding window: it follows a kind whose run time drifts), their median and 90th
    # percentile, and how many runs were ever counted.
    Column("key", String(256), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("median_s", Float, nullable=False),
    Column("p90_s", Float, nullable=False),
    Column("samples", Text, nullable=False),  # JSON list of the window's durations
    Column("updated_at", Float, nullable=False),
)


# -- schema version 5 -------------------------------------------------------------------------

cache = Table(
    "bf_cache",
    metadata,
    # The memoization index: for each cache key, the task whose result is reused (the latest
    # submitted with that key that did not fail).  A task deleted takes its entry with it;
    # ``cache clear`` deletes entries and leaves the tasks.
    Column("key", String(64), primary_key=True),
    Column("task_id", Integer, ForeignKey("bf_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(256), nullable=False),  # the task's estimate key: label, else name
    Column("created_at", Float, nullable=False),
    Column("hits", Integer, nullable=False, default=0),
    Column("last_hit_at", Float),
)
Index("ix_bf_cache_task", cache.c.task_id)


def estimate_key(table=tasks):
    """The SQL expression of a task's estimate key: its ``kind=`` label, else its name."""
    from sqlalchemy import func

    return func.coalesce(table.c.label, table.c.name)
