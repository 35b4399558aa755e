"""Every SQL statement of the store, each built by one named function.

No other module outside ``backends/`` builds SQL.  Statements take bound parameters so that
SQLAlchemy compiles each one once and caches it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    Integer,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.sql import Select

from ..tasks import CLAIMABLE, HELD, LauncherState, TaskState, sources
from .schema import batch_jobs, dependencies, history, launchers, meta, runs, tasks

CLAIM_COLUMNS = (
    tasks.c.id,
    tasks.c.state,
    tasks.c.name,
    tasks.c.kind,
    tasks.c.payload,
    tasks.c.tags,
    tasks.c.data,
    tasks.c.num_nodes,
    tasks.c.ranks_per_node,
    tasks.c.threads_per_rank,
    tasks.c.gpus_per_rank,
    tasks.c.node_packing_count,
    tasks.c.wall_time_s,
    tasks.c.max_retries,
    tasks.c.num_restarts,
    tasks.c.auto_timeout_retry,
    tasks.c.workdir,
    tasks.c.num_parents,
)


def _p(name: str):
    # A bind parameter with a placeholder value, so the statement can be compiled once with
    # its constant IN lists expanded (see RawStatement); every caller passes the real value.
    return bindparam(name, None)


def _in_states(states: Iterable[TaskState]):
    # Rendered as literals, not parameters: SQLite uses a partial index only when the query's
    # WHERE names the same constants as the index's (https://sqlite.org/partialindex.html).
    values = sorted(s.value for s in states)
    return tasks.c.state.in_(bindparam("states", values, expanding=True, literal_execute=True))


def read_meta():
    """All key/value rows of the meta table."""
    return select(meta.c.key, meta.c.value)


def write_meta():
    """Insert one meta row (key, value)."""
    return insert(meta)


def update_meta():
    """Set meta row :b_key to :b_value."""
    return update(meta).where(meta.c.key == _p("b_key")).values(value=_p("b_value"))


#: Columns a new task leaves at NULL (filled when it runs); not sent at all on insert.
_UNSET_AT_CREATION = {"launcher_id", "result", "error", "return_code"}


def insert_tasks():
    """Insert task rows with ids chosen by the store (see ``allocate_task_ids``)."""
    return insert(tasks).values(
        {c.name: _p(c.name) for c in tasks.c if c.name not in _UNSET_AT_CREATION})


def insert_history():
    """Insert history rows (task_id, from_state, to_state, at, message)."""
    return insert(history).values(
        {k: _p(k) for k in ("task_id", "from_state", "to_state", "at", "message")}
    )


_RUN_FIELDS = ("task_id", "launcher_id", "hosts", "gpus", "num_nodes", "cores", "node_share",
               "started_at", "ended_at", "state")


def insert_runs():
    """Insert execution-profile rows (one per run: where and when)."""
    return insert(runs).values({k: _p(k) for k in _RUN_FIELDS})


def select_runs():
    """Runs that overlap [:start, :end], oldest first (utilization and throughput)."""
    return (select(*(runs.c[k] for k in _RUN_FIELDS))
            .where(runs.c.ended_at >= _p("start"), runs.c.started_at <= _p("end"))
            .order_by(runs.c.started_at))


def select_launchers():
    """Every launcher with its recorded resources (info) and life span."""
    return select(launchers.c.id, launchers.c.hostname, launchers.c.state,
                  launchers.c.started_at, launchers.c.heartbeat_at, launchers.c.info,
                  launchers.c.batch_job_id).order_by(launchers.c.id)


def any_dependency():
    """One dependency edge, if there is any (is there a workflow with dependencies at all?)."""
    return select(dependencies.c.child_id).limit(1)


def insert_dependencies():
    """Insert (child_id, parent_id) edges."""
    return insert(dependencies)


def select_claimable(max_nodes: int | None, tags: tuple[tuple[str, str], ...] = (),
                     max_gpus: int | None = None, wall_limited: bool = False) -> Select:
    """The first :limit claimable tasks in claim order that fit ``max_nodes`` nodes,
    ``max_gpus`` GPUs per node, carry ``tags``, and (``wall_limited``) have no wall time or
    one of at most :max_wall seconds."""
    # SKIP LOCKED (PostgreSQL): concurrent claimers pass over each other's rows instead of
    # queueing behind them; SQLite has one writer and ignores it.
    stmt = select(*CLAIM_COLUMNS).where(_in_states(CLAIMABLE)).with_for_update(skip_locked=True)
    if max_nodes is not None:
        stmt = stmt.where(tasks.c.num_nodes <= max_nodes)
    if max_gpus is not None:
        stmt = stmt.where(tasks.c.ranks_per_node * tasks.c.gpus_per_rank <= max_gpus)
    if wall_limited:
        stmt = stmt.where(or_(tasks.c.wall_time_s.is_(None),
                              tasks.c.wall_time_s <= _p("max_wall")))
    for key, value in tags:
        stmt = stmt.where(tasks.c.tags[key].as_string() == value)
    return stmt.order_by(tasks.c.priority.desc(), tasks.c.id).limit(_p("limit"))


def select_unfit(tags: tuple[tuple[str, str], ...] = ()) -> Select:
    """Claimable tasks with ``tags`` that need more than :max_nodes nodes or more than
    :max_gpus GPUs per node (first :limit; a launcher warns about them)."""
    stmt = select(tasks.c.id, tasks.c.num_nodes, tasks.c.ranks_per_node * tasks.c.gpus_per_rank)
    stmt = stmt.where(_in_states(CLAIMABLE), or_(
        tasks.c.num_nodes > _p("max_nodes"),
        tasks.c.ranks_per_node * tasks.c.gpus_per_rank > _p("max_gpus")))
    for key, value in tags:
        stmt = stmt.where(tasks.c.tags[key].as_string() == value)
    return stmt.order_by(tasks.c.id).limit(_p("limit"))


def mark_claimed():
    """Move claimable task :b_id to CLAIMED under launcher :b_lid."""
    return (
        update(tasks)
        .where(tasks.c.id == _p("b_id"), _in_states(CLAIMABLE))
        .values(state=TaskState.CLAIMED.value, launcher_id=_p("b_lid"),
                updated_at=_p("b_now"))
    )


def mark_started():
    """Move task :b_id from CLAIMED to RUNNING, only while launcher :b_lid holds it."""
    return (
        update(tasks)
        .where(tasks.c.id == _p("b_id"), tasks.c.state == TaskState.CLAIMED.value,
               tasks.c.launcher_id == _p("b_lid"))
        .values(state=TaskState.RUNNING.value, updated_at=_p("b_now"))
    )


def select_running_of(launcher_id: int, ids: list[int]):
    """Ids among ``ids`` that are RUNNING under launcher ``launcher_id``."""
    return select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.launcher_id == launcher_id,
                                    tasks.c.state == TaskState.RUNNING.value)


def finish_running(from_state: str = TaskState.RUNNING.value):
    """Write one outcome: guarded so only the launcher holding the task may write it, from
    ``from_state`` (RUNNING; or CLAIMED, for a run that started and ended between two round
    trips of its launcher)."""
    return (
        update(tasks)
        .where(
            tasks.c.id == _p("b_id"),
            tasks.c.state == from_state,
            tasks.c.launcher_id == _p("b_lid"),
        )
        .values(
            state=_p("b_state"),
            kill_requested=False,
            result=_p("b_result"),
            error=_p("b_error"),
            return_code=_p("b_rc"),
            num_restarts=tasks.c.num_restarts + _p("b_inc"),
            updated_at=_p("b_now"),
        )
    )


def lock_cancellable(ids: list[int]):
    """(id, state) of tasks ``ids`` that may be cancelled, locked for update."""
    return (
        select(tasks.c.id, tasks.c.state)
        .where(tasks.c.id.in_(ids), _in_states(sources(TaskState.CANCELLED)))
        .order_by(tasks.c.id)
        .with_for_update()
    )


def request_kill(ids: list[int]):
    """Flag RUNNING tasks ``ids`` for their launcher to kill, returning the ids flagged."""
    return (
        update(tasks)
        .where(tasks.c.id.in_(ids), _in_states([TaskState.RUNNING]))
        .values(kill_requested=True, updated_at=_p("now"))
        .returning(tasks.c.id)
    )


def select_kill_requests():
    """Ids of the tasks launcher :lid runs that someone asked to kill."""
    return select(tasks.c.id).where(
        tasks.c.launcher_id == _p("lid"), _in_states([TaskState.RUNNING]),
        tasks.c.kill_requested == True)  # noqa: E712 - SQL, not Python


def set_state(ids: list[int]):
    """Set state :state on tasks ``ids``."""
    return update(tasks).where(tasks.c.id.in_(ids)).values(state=_p("state"),
                                                           updated_at=_p("now"))


def latest_event_id():
    """The newest history id (0 when empty)."""
    return select(func.coalesce(func.max(history.c.id), 0))


def select_events():
    """History rows after :after (up to :limit), each with the result or error its state
    carries: one query per batch, and the cursor moves past every row read."""
    return (
        select(
            history.c.id,
            history.c.task_id,
            history.c.to_state,
            case((history.c.to_state == TaskState.JOB_FINISHED.value, tasks.c.result)),
            case((history.c.to_state.in_([TaskState.FAILED.value, TaskState.KILLED.value]),
                  tasks.c.error)),
        )
        .join(tasks, tasks.c.id == history.c.task_id)
        .where(history.c.id > _p("after"))
        .order_by(history.c.id)
        .limit(_p("limit"))
    )


def select_task_rows(ids: list[int]):
    """Full rows of tasks ``ids`` (without payloads)."""
    cols = [c for c in tasks.c if c.name != "payload"]
    return select(*cols).where(tasks.c.id.in_(ids))


def select_outcomes(ids: list[int]):
    """(id, state, result, error) of tasks ``ids``: what a re-attached future needs."""
    return select(tasks.c.id, tasks.c.state, tasks.c.result, tasks.c.error).where(
        tasks.c.id.in_(ids))


def select_ids_tagged(tags: tuple[tuple[str, str], ...]):
    """Ids of the tasks carrying every tag in ``tags``, oldest first."""
    stmt = select(tasks.c.id)
    for key, value in tags:
        stmt = stmt.where(tasks.c.tags[key].as_string() == value)
    return stmt.order_by(tasks.c.id)


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


def insert_launcher():
    """Register a launcher, returning its id."""
    cols = ("hostname", "pid", "state", "started_at", "heartbeat_at", "info", "batch_job_id",
            "lease_s")
    return insert(launchers).values({c: _p(c) for c in cols}).returning(launchers.c.id)


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
        .where(launchers.c.id == _p("lid"), _alive(_p("asked")))
        .values(heartbeat_at=_p("now"))
        .returning(launchers.c.id)
    )


def set_launcher_state():
    """Set the state of launcher :lid (e.g. STOPPED)."""
    return (
        update(launchers)
        .where(launchers.c.id == _p("lid"))
        .values(state=_p("state"), heartbeat_at=_p("now"))
    )


def select_expired_launchers():
    """Launchers still marked RUNNING whose own lease ran out before :now (counted from
    their heartbeat or the store's last blockage :blocked, see ``_alive``)."""
    return select(launchers.c.id).where(
        launchers.c.state == LauncherState.RUNNING.value,
        ~_alive(_p("now"), _p("blocked")),
    )


def select_orphaned_launchers():
    """Launchers that hold tasks (CLAIMED or RUNNING) but are not alive at :now, whatever
    their recorded state (a launcher marked STOPPED may have claimed after it was)."""
    alive = select(launchers.c.id).where(_alive(_p("now"), _p("blocked")))
    return (select(tasks.c.launcher_id).distinct()
            .where(_in_states(HELD), tasks.c.launcher_id.not_in(alive.scalar_subquery())))


def lock_held_by(launcher_ids: list[int]):
    """(id, state) of the tasks held (CLAIMED or RUNNING) by ``launcher_ids``, locked."""
    return (
        select(tasks.c.id, tasks.c.state)
        .where(tasks.c.launcher_id.in_(launcher_ids), _in_states(HELD))
        .order_by(tasks.c.id)
        .with_for_update()
    )


def requeue(ids: list[int]):
    """Give held tasks ``ids`` back: CLAIMED ones (never started) to READY, RUNNING ones to
    RESTART_READY."""
    return (
        update(tasks)
        .where(tasks.c.id.in_(ids), _in_states(HELD))
        .values(state=case((tasks.c.state == TaskState.CLAIMED.value, TaskState.READY.value),
                           else_=TaskState.RESTART_READY.value),
                launcher_id=None, kill_requested=False, updated_at=_p("now"))
    )


def mark_blocked():
    """Record :now as the end of a time the store was blocked for every writer."""
    return update(meta).where(meta.c.key == "blocked_until").values(value=_p("now_text"))


def select_blocked():
    """When the store was last blocked for every writer (no row or '0': never)."""
    return select(meta.c.value).where(meta.c.key == "blocked_until")


def count_deletions():
    """Add :n to the store's count of deleted tasks (kept in the meta table)."""
    return update(meta).where(meta.c.key == "deletions").values(
        value=cast(cast(meta.c.value, Integer) + _p("n"), Text))


def select_deletions():
    """The store's count of deleted tasks (no row: none ever)."""
    return select(meta.c.value).where(meta.c.key == "deletions")


def delete_tasks(ids: list[int]):
    """Delete tasks ``ids`` with their history and edges."""
    return delete(tasks).where(tasks.c.id.in_(ids))


def select_parents_of(child_ids: list[int]):
    """(child id, child state, child allows failure, parent id, parent state) for every
    dependency edge of ``child_ids``."""
    parent = tasks.alias("parent")
    return (
        select(dependencies.c.child_id, tasks.c.state, tasks.c.allow_parent_failure,
               dependencies.c.parent_id, parent.c.state)
        .join(tasks, tasks.c.id == dependencies.c.child_id)
        .join(parent, parent.c.id == dependencies.c.parent_id)
        .where(dependencies.c.child_id.in_(child_ids))
    )


def select_children_of(parent_ids: list[int]):
    """Ids of the tasks that depend on any of ``parent_ids``."""
    return select(dependencies.c.child_id).where(
        dependencies.c.parent_id.in_(parent_ids)).distinct()


def select_parent_results(child_ids: list[int]):
    """(child id, parent id, parent result) for every dependency edge of ``child_ids``."""
    return (
        select(dependencies.c.child_id, dependencies.c.parent_id, tasks.c.result)
        .join(tasks, tasks.c.id == dependencies.c.parent_id)
        .where(dependencies.c.child_id.in_(child_ids))
    )


def release_child():
    """Move task :b_id out of AWAITING_PARENTS to :b_state, with :b_error if it failed."""
    return (
        update(tasks)
        .where(tasks.c.id == _p("b_id"), _in_states([TaskState.AWAITING_PARENTS]))
        .values(state=_p("b_state"), error=_p("b_error"), updated_at=_p("b_now"))
    )


def sqlite_task_sequence():
    """SQLite: the last task id handed out (AUTOINCREMENT keeps it in sqlite_sequence)."""
    return text("SELECT seq FROM sqlite_sequence WHERE name = 'bf_tasks'")


def pg_next_task_ids():
    """PostgreSQL: :n fresh task ids from the table's sequence, and a NOTIFY on bf_tasks
    (delivered at commit; one round trip for both)."""
    return text("WITH announce AS (SELECT pg_notify('bf_tasks', '')) "
                "SELECT nextval('bf_tasks_id_seq') FROM generate_series(1, :n), announce")


def pg_claim(max_nodes: int | None, tags: tuple[tuple[str, str], ...] = (),
             max_gpus: int | None = None, wall_limited: bool = False):
    """PostgreSQL: claim in one statement: the rows ``select_claimable`` would pick, locked
    with SKIP LOCKED, moved to CLAIMED under :lid; returns CLAIM_COLUMNS (with the state left
    behind) and the priority, for ordering."""
    picked = select_claimable(max_nodes, tags, max_gpus, wall_limited).with_only_columns(
        tasks.c.id, tasks.c.state.label("old_state")).subquery("picked")
    columns = [picked.c.old_state if c is tasks.c.state else c for c in CLAIM_COLUMNS]
    return (
        update(tasks)
        .where(tasks.c.id == picked.c.id)
        .values(state=TaskState.CLAIMED.value, launcher_id=_p("lid"), updated_at=_p("now"))
        .returning(*columns, tasks.c.priority)
    )


def pg_insert_history_values() -> tuple[str, str]:
    """PostgreSQL: insert history rows under the history lock, with a NOTIFY, in one
    statement (psycopg2 ``execute_values`` SQL and row template).  The lock is taken before
    any row reaches the insert, so before any history id is drawn."""
    sql = (
        "WITH ordered AS (SELECT pg_advisory_xact_lock(hashtext('bf_history')), "
        "pg_notify('bf_events', '')) "
        "INSERT INTO bf_history (task_id, from_state, to_state, at, message) "
        "SELECT v.task_id, v.from_state, v.to_state, v.at, v.message "
        "FROM (VALUES %s) AS v(task_id, from_state, to_state, at, message), ordered"
    )
    template = ("(%(task_id)s::int, %(from_state)s::varchar, %(to_state)s::varchar, "
                "%(at)s::float8, %(message)s::text)")
    return sql, template


#: Fields of a new task that differ from task to task (the rest come from its options).
TASK_OWN_FIELDS = ("id", "name", "kind", "state", "payload", "parent_id", "num_parents",
                   "allow_parent_failure")


def pg_insert_tasks_shared(shared_fields: list[str]) -> tuple[str, str, str]:
    """PostgreSQL: insert many tasks that share their option fields, sending only the
    per-task fields row by row (psycopg2 ``execute_values``); returns the SQL with a
    ``{shared}`` slot for the mogrified shared values, the row template, and the slot's
    own template."""
    own = ", ".join(TASK_OWN_FIELDS)
    sql = (
        f"INSERT INTO bf_tasks ({own}, {', '.join(shared_fields)}) "
        f"SELECT v.*, {{shared}} FROM (VALUES %s) AS v({own})"
    )
    template = ("(%(id)s::int, %(name)s::varchar, %(kind)s::varchar, %(state)s::varchar, "
                "%(payload)s::bytea, %(parent_id)s::int, %(num_parents)s::int, "
                "%(allow_parent_failure)s::boolean)")
    casts = {"tags": "::json", "data": "::json", "wall_time_s": "::float8",
             "created_at": "::float8", "updated_at": "::float8"}
    shared = ", ".join(f"%({f})s{casts.get(f, '')}" for f in shared_fields)
    return sql, template, shared


def pg_unclaim():
    """PostgreSQL: give claimed task :b_id back (state :b_state, no launcher) in the claim's own
    transaction, when the launcher finds it has no room for it."""
    return (update(tasks).where(tasks.c.id == _p("b_id"))
            .values(state=_p("b_state"), launcher_id=None))


def pg_notify_tasks():
    """PostgreSQL: announce claimable tasks to launchers (delivered at commit)."""
    return text("SELECT pg_notify('bf_tasks', '')")


def pg_lock_schema():
    """PostgreSQL: the transaction lock under which one process creates the schema."""
    return text("SELECT pg_advisory_xact_lock(hashtext('bf_schema'))")


def pg_finish_running_values() -> tuple[str, str]:
    """PostgreSQL: ``finish_running`` for many tasks in one statement (from RUNNING or
    CLAIMED), returning the ids written with the state each left (``old`` is read from the
    statement's snapshot, so it holds the value before the update; psycopg2
    ``execute_values`` SQL and row template)."""
    sql = (
        "UPDATE bf_tasks AS t SET state = v.state, kill_requested = false, "
        "result = v.result, error = v.error, "
        "return_code = v.rc, num_restarts = t.num_restarts + v.inc, updated_at = v.now "
        "FROM (VALUES %s) AS v(id, lid, state, result, error, rc, inc, now), bf_tasks AS old "
        "WHERE t.id = v.id AND old.id = t.id AND t.state IN ('CLAIMED', 'RUNNING') "
        "AND t.launcher_id = v.lid "
        "RETURNING t.id, old.state"
    )
    template = ("(%(b_id)s::int, %(b_lid)s::int, %(b_state)s::varchar, %(b_result)s::bytea, "
                "%(b_error)s::bytea, %(b_rc)s::int, %(b_inc)s::int, %(b_now)s::float8)")
    return sql, template


def pg_mark_started_values() -> tuple[str, str]:
    """PostgreSQL: ``mark_started`` for many tasks in one statement, returning the ids moved
    (psycopg2 ``execute_values`` SQL and row template)."""
    sql = (
        "UPDATE bf_tasks AS t SET state = 'RUNNING', updated_at = v.now "
        "FROM (VALUES %s) AS v(id, lid, now) "
        "WHERE t.id = v.id AND t.state = 'CLAIMED' AND t.launcher_id = v.lid "
        "RETURNING t.id"
    )
    return sql, "(%(b_id)s::int, %(b_lid)s::int, %(b_now)s::float8)"


# -- task queries (balsam_futures.query) --------------------------------------------------

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
    "contains": lambda col, v: col.contains(v, autoescape=True),
    "startswith": lambda col, v: col.startswith(v, autoescape=True),
}


def _condition(field: str, op: str, value):
    if field.startswith("tags."):
        col = tasks.c.tags[field[5:]].as_string()
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
        stmt = stmt.where(_in_states(states))
    return stmt.order_by(tasks.c.id).with_for_update()


def query_update(ids: list[int], values: dict):
    """Set ``values`` on tasks ``ids``."""
    return update(tasks).where(tasks.c.id.in_(ids)).values(**values, updated_at=_p("now"))


# -- batch jobs -----------------------------------------------------------------------------

#: Columns written when a batch job is created (the database draws the id).
BATCH_JOB_INSERT_COLUMNS = tuple(c.name for c in batch_jobs.c if c.name != "id")


def insert_batch_job():
    """Insert one batch job, returning its id."""
    return (insert(batch_jobs)
            .values({c: _p(c) for c in BATCH_JOB_INSERT_COLUMNS})
            .returning(batch_jobs.c.id))


def select_batch_jobs(ids: list[int] | None, states: tuple[str, ...] | None):
    """Batch job rows, oldest first: all, or those with ``ids`` and/or in ``states``."""
    stmt = select(batch_jobs)
    if ids is not None:
        stmt = stmt.where(batch_jobs.c.id.in_(ids))
    if states is not None:
        stmt = stmt.where(batch_jobs.c.state.in_(
            bindparam("states", list(states), expanding=True, literal_execute=True)))
    return stmt.order_by(batch_jobs.c.id)


def update_batch_job(columns: tuple[str, ...], from_states: tuple[str, ...] | None):
    """Set ``columns`` (bound as :v_<column>) on batch job :b_id, only while its state is in
    ``from_states`` (when given): the row count tells whether it was."""
    stmt = update(batch_jobs).where(batch_jobs.c.id == _p("b_id"))
    if from_states is not None:
        stmt = stmt.where(batch_jobs.c.state.in_(
            bindparam("states", list(from_states), expanding=True, literal_execute=True)))
    return stmt.values({c: _p(f"v_{c}") for c in columns})


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
    ).where(_in_states(CLAIMABLE))
    for key, value in tags:
        stmt = stmt.where(tasks.c.tags[key].as_string() == value)
    return stmt
