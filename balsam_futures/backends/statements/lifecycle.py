"""Statements along a task's trip: created, claimed, started, finished or cancelled, and the
events and dependency releases that follow.

Where PostgreSQL sends many rows in one statement (psycopg2 ``execute_values``), its raw form
sits next to the Core statement it stands for, and both are built from one list of fields:
``insert_tasks``/``pg_insert_tasks_shared``, ``insert_history``/``pg_insert_history_values``,
``finish_running``/``pg_finish_running_values`` (tests/backends/test_raw_statements.py checks
that each pair writes the same rows).
"""

from __future__ import annotations

from sqlalchemy import case, delete, func, insert, or_, select, text, update
from sqlalchemy.sql import Select

from ...tasks import CLAIMABLE, HELD, TaskState, sources
from ..schema import dependencies, history, runs, tasks
from .common import bound, in_states, tagged

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
    tasks.c.label,  # with the name, the estimate key its run will be learned under
    tasks.c.staging,  # stage_in/stage_out: a task with outputs to ship ends in STAGING_OUT
)

#: The PostgreSQL types the raw forms cast values to: a VALUES list has no column types of
#: its own.  Fields not named here are sent as literals the column's type accepts.
_PG_TYPES = {
    "id": "int", "name": "varchar", "kind": "varchar", "state": "varchar", "payload": "bytea",
    "parent_id": "int", "num_parents": "int", "allow_parent_failure": "boolean",
    "tags": "json", "data": "json", "wall_time_s": "float8", "created_at": "float8",
    "updated_at": "float8",
    "task_id": "int", "from_state": "varchar", "to_state": "varchar", "at": "float8",
    "message": "text", "cache_key": "varchar", "cached_from": "int", "staging": "json",
}


def _pg_row(fields) -> str:
    """A psycopg2 row template for ``fields``, each cast to its PostgreSQL type."""
    return "(" + ", ".join(f"%({f})s::{_PG_TYPES[f]}" for f in fields) + ")"


#: Columns a new task leaves at NULL (filled when it runs); not sent at all on insert.
_UNSET_AT_CREATION = {"launcher_id", "result", "error", "return_code"}
#: Every column a new task is written with, by both forms of the insert.
TASK_CREATION_COLUMNS = tuple(c.name for c in tasks.c if c.name not in _UNSET_AT_CREATION)
#: Fields of a new task that differ from task to task (the rest come from its options).
TASK_OWN_FIELDS = ("id", "name", "kind", "state", "payload", "parent_id", "num_parents",
                   "allow_parent_failure")
#: Fields of a task submitted with cache= (cache_ops.py), and of one with staging; left out
#: of the insert of a batch without any (they stay NULL): three bound NULLs more per row cost
#: a bulk insert 15 % on SQLite (binding, not storing, is what costs).
CACHE_FIELDS = ("cache_key", "cached_from")
STAGING_FIELDS = ("staging",)


def insert_tasks(cached: bool = False, staged: bool = False):
    """Insert task rows with ids chosen by the store (see ``allocate_task_ids``); the
    CACHE_FIELDS too if ``cached``, the STAGING_FIELDS if ``staged``."""
    left_out = (() if cached else CACHE_FIELDS) + (() if staged else STAGING_FIELDS)
    return insert(tasks).values({c: bound(c) for c in TASK_CREATION_COLUMNS
                                 if c not in left_out})


def pg_insert_tasks_shared(shared_fields: list[str],
                           cached: bool = False) -> tuple[str, str, str]:
    """PostgreSQL: ``insert_tasks`` for many tasks that share their option fields, sending
    only the per-task fields row by row (psycopg2 ``execute_values``); returns the SQL with a
    ``{shared}`` slot for the mogrified shared values, the row template, and the slot's own
    template.  The fields are TASK_OWN_FIELDS and ``shared_fields`` (the other columns of
    TASK_CREATION_COLUMNS), and the CACHE_FIELDS row by row if ``cached``."""
    own_fields = TASK_OWN_FIELDS + (CACHE_FIELDS if cached else ())
    own = ", ".join(own_fields)
    sql = (
        f"INSERT INTO {tasks.name} ({own}, {', '.join(shared_fields)}) "
        f"SELECT v.*, {{shared}} FROM (VALUES %s) AS v({own})"
    )
    shared = ", ".join(f"%({f})s" + (f"::{_PG_TYPES[f]}" if f in _PG_TYPES else "")
                       for f in shared_fields)
    return sql, _pg_row(own_fields), shared


def sqlite_task_sequence():
    """SQLite: the last task id handed out (AUTOINCREMENT keeps it in sqlite_sequence)."""
    return text("SELECT seq FROM sqlite_sequence WHERE name = 'bf_tasks'")


def pg_next_task_ids():
    """PostgreSQL: :n fresh task ids from the table's sequence, and a NOTIFY on bf_tasks
    (delivered at commit; one round trip for both)."""
    return text("WITH announce AS (SELECT pg_notify('bf_tasks', '')) "
                "SELECT nextval('bf_tasks_id_seq') FROM generate_series(1, :n), announce")


def pg_commit_without_flush():
    """PostgreSQL: this transaction's commit does not wait for its WAL to reach the disk
    (what a launcher's claim-only round trip runs; see LauncherOps.exchange)."""
    return text("SET LOCAL synchronous_commit TO OFF")


def pg_notify_tasks():
    """PostgreSQL: announce claimable tasks to launchers (delivered at commit)."""
    return text("SELECT pg_notify('bf_tasks', '')")


#: The fields of a history row, in both forms of its insert.
HISTORY_FIELDS = ("task_id", "from_state", "to_state", "at", "message")


def insert_history():
    """Insert history rows (task_id, from_state, to_state, at, message)."""
    return insert(history).values({k: bound(k) for k in HISTORY_FIELDS})


def pg_insert_history_values() -> tuple[str, str]:
    """PostgreSQL: ``insert_history`` under the history lock, with a NOTIFY, in one
    statement (psycopg2 ``execute_values`` SQL and row template).  The lock is taken before
    any row reaches the insert, so before any history id is drawn."""
    names = ", ".join(HISTORY_FIELDS)
    sql = (
        "WITH ordered AS (SELECT pg_advisory_xact_lock(hashtext('bf_history')), "
        "pg_notify('bf_events', '')) "
        f"INSERT INTO {history.name} ({names}) "
        f"SELECT {', '.join(f'v.{k}' for k in HISTORY_FIELDS)} "
        f"FROM (VALUES %s) AS v({names}), ordered"
    )
    return sql, _pg_row(HISTORY_FIELDS)


#: The fields of a run's row (the execution profile).
RUN_FIELDS = ("task_id", "launcher_id", "hosts", "gpus", "num_nodes", "cores", "node_share",
              "started_at", "ended_at", "state")


def insert_runs():
    """Insert execution-profile rows (one per run: where and when)."""
    return insert(runs).values({k: bound(k) for k in RUN_FIELDS})



def select_claimable(max_nodes: int | None, tags: tuple[tuple[str, str], ...] = (),
                     max_gpus: int | None = None, wall_limited: bool = False,
                     by_submission: bool = False) -> Select:
    """The first :limit claimable tasks in claim order that fit ``max_nodes`` nodes,
    ``max_gpus`` GPUs per node, carry ``tags``, and (``wall_limited``) are not expected to
    run longer than :max_wall seconds (unknown: expected 0).  Claim order: priority, then the
    most nodes, then longest expected run first (ix_bf_tasks_order), then submission;
    ``by_submission`` (the starvation guard): priority, then submission (ix_bf_tasks_claim)."""
    # SKIP LOCKED (PostgreSQL): concurrent claimers pass over each other's rows instead of
    # queueing behind them; SQLite has one writer and ignores it.
    stmt = select(*CLAIM_COLUMNS).where(in_states(CLAIMABLE)).with_for_update(skip_locked=True)
    if max_nodes is not None:
        stmt = stmt.where(tasks.c.num_nodes <= max_nodes)
    if max_gpus is not None:
        stmt = stmt.where(tasks.c.ranks_per_node * tasks.c.gpus_per_rank <= max_gpus)
    if wall_limited:
        stmt = stmt.where(tasks.c.expected_s <= bound("max_wall"))
    stmt = tagged(stmt, tags)
    if by_submission:
        return stmt.order_by(tasks.c.priority.desc(), tasks.c.id).limit(bound("limit"))
    return stmt.order_by(tasks.c.priority.desc(), tasks.c.num_nodes.desc(),
                         tasks.c.expected_s.desc(), tasks.c.id).limit(bound("limit"))


def pg_claim(max_nodes: int | None, tags: tuple[tuple[str, str], ...] = (),
             max_gpus: int | None = None, wall_limited: bool = False,
             by_submission: bool = False):
    """PostgreSQL: claim in one statement: the rows ``select_claimable`` would pick, locked
    with SKIP LOCKED, moved to CLAIMED under :lid; returns CLAIM_COLUMNS (with the state left
    behind), the priority and the expected run time, for ordering."""
    picked = select_claimable(max_nodes, tags, max_gpus, wall_limited,
                              by_submission).with_only_columns(
        tasks.c.id, tasks.c.state.label("old_state")).subquery("picked")
    columns = [picked.c.old_state if c is tasks.c.state else c for c in CLAIM_COLUMNS]
    return (
        update(tasks)
        .where(tasks.c.id == picked.c.id)
        .values(state=TaskState.CLAIMED.value, launcher_id=bound("lid"),
                updated_at=bound("now"))
        .returning(*columns, tasks.c.priority, tasks.c.expected_s)
    )


def select_unfit(tags: tuple[tuple[str, str], ...] = ()) -> Select:
    """Claimable tasks with ``tags`` that need more than :max_nodes nodes or more than
    :max_gpus GPUs per node (first :limit in ix_bf_tasks_claim's order, which the query
    walks; ordered by id alone, SQLite scanned the whole table by rowid instead)."""
    stmt = select(tasks.c.id, tasks.c.num_nodes, tasks.c.ranks_per_node * tasks.c.gpus_per_rank)
    stmt = stmt.where(in_states(CLAIMABLE), or_(
        tasks.c.num_nodes > bound("max_nodes"),
        tasks.c.ranks_per_node * tasks.c.gpus_per_rank > bound("max_gpus")))
    return tagged(stmt, tags).order_by(tasks.c.priority.desc(), tasks.c.id).limit(bound("limit"))


def mark_claimed():
    """Move claimable task :b_id to CLAIMED under launcher :b_lid."""
    return (
        update(tasks)
        .where(tasks.c.id == bound("b_id"), in_states(CLAIMABLE))
        .values(state=TaskState.CLAIMED.value, launcher_id=bound("b_lid"),
                updated_at=bound("b_now"))
    )


def pg_unclaim():
    """PostgreSQL: give claimed task :b_id back (state :b_state, no launcher) in the claim's own
    transaction, when the launcher finds it has no room for it."""
    return (update(tasks).where(tasks.c.id == bound("b_id"))
            .values(state=bound("b_state"), launcher_id=None))


def mark_started():
    """Move task :b_id from CLAIMED to RUNNING, only while launcher :b_lid holds it."""
    return (
        update(tasks)
        .where(tasks.c.id == bound("b_id"), tasks.c.state == TaskState.CLAIMED.value,
               tasks.c.launcher_id == bound("b_lid"))
        .values(state=TaskState.RUNNING.value, updated_at=bound("b_now"))
    )


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


def select_running_of(launcher_id: int, ids: list[int]):
    """Ids among ``ids`` that are RUNNING under launcher ``launcher_id``."""
    return select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.launcher_id == launcher_id,
                                    tasks.c.state == TaskState.RUNNING.value)


#: The fields of one outcome, in the order of the raw form's VALUES rows, with their
#: PostgreSQL types.
_OUTCOME_FIELDS = (("b_id", "int"), ("b_lid", "int"), ("b_state", "varchar"),
                   ("b_result", "bytea"), ("b_error", "bytea"), ("b_rc", "int"),
                   ("b_inc", "int"), ("b_now", "float8"))
#: The columns an outcome sets to one of its fields, in both forms of the write; besides
#: these, both clear kill_requested and add b_inc to num_restarts.
_OUTCOME_SETS = (("state", "b_state"), ("result", "b_result"), ("error", "b_error"),
                 ("return_code", "b_rc"), ("updated_at", "b_now"))


def finish_running(from_state: str = TaskState.RUNNING.value):
    """Write one outcome: guarded so only the launcher holding the task may write it, from
    ``from_state`` (RUNNING; or CLAIMED, for a run that started and ended between two round
    trips of its launcher)."""
    return (
        update(tasks)
        .where(
            tasks.c.id == bound("b_id"),
            tasks.c.state == from_state,
            tasks.c.launcher_id == bound("b_lid"),
        )
        .values({
            **{column: bound(field) for column, field in _OUTCOME_SETS},
            "kill_requested": False,
            "num_restarts": tasks.c.num_restarts + bound("b_inc"),
        })
    )


def pg_finish_running_values() -> tuple[str, str]:
    """PostgreSQL: ``finish_running`` for many tasks in one statement (from RUNNING or
    CLAIMED), returning the ids written with the state each left (``old`` is read from the
    statement's snapshot, so it holds the value before the update; psycopg2
    ``execute_values`` SQL and row template)."""
    sets = ", ".join(f"{column} = v.{field}" for column, field in _OUTCOME_SETS)
    fields = ", ".join(field for field, _type in _OUTCOME_FIELDS)
    held = ", ".join(f"'{s.value}'" for s in (TaskState.CLAIMED, TaskState.RUNNING))
    sql = (
        f"UPDATE {tasks.name} AS t SET {sets}, kill_requested = false, "
        "num_restarts = t.num_restarts + v.b_inc "
        f"FROM (VALUES %s) AS v({fields}), {tasks.name} AS old "
        f"WHERE t.id = v.b_id AND old.id = t.id AND t.state IN ({held}) "
        "AND t.launcher_id = v.b_lid "
        "RETURNING t.id, old.state"
    )
    template = "(" + ", ".join(f"%({field})s::{pg}" for field, pg in _OUTCOME_FIELDS) + ")"
    return sql, template



def lock_cancellable(ids: list[int]):
    """(id, state) of tasks ``ids`` that may be cancelled, locked for update."""
    return (
        select(tasks.c.id, tasks.c.state)
        .where(tasks.c.id.in_(ids), in_states(sources(TaskState.CANCELLED)))
        .order_by(tasks.c.id)
        .with_for_update()
    )


def set_state(ids: list[int]):
    """Set state :state on tasks ``ids``."""
    return update(tasks).where(tasks.c.id.in_(ids)).values(state=bound("state"),
                                                           updated_at=bound("now"))


def request_kill(ids: list[int]):
    """Flag RUNNING tasks ``ids`` for their launcher to kill, returning the ids flagged."""
    return (
        update(tasks)
        .where(tasks.c.id.in_(ids), in_states([TaskState.RUNNING]))
        .values(kill_requested=True, updated_at=bound("now"))
        .returning(tasks.c.id)
    )


def select_kill_requests():
    """Ids of the tasks launcher :lid runs that someone asked to kill."""
    # in_states(HELD) repeats ix_bf_tasks_held's condition, so the poll (every 50 ms under
    # load) reads the launcher's tasks in flight, not every row: with the RUNNING test alone
    # SQLite scanned the table (2.5 ms a poll at 30,000 rows, 29 ms at 330,000).
    return select(tasks.c.id).where(
        tasks.c.launcher_id == bound("lid"), in_states(HELD),
        in_states([TaskState.RUNNING]),
        tasks.c.kill_requested == True)  # noqa: E712 - SQL, not Python


def delete_tasks(ids: list[int]):
    """Delete tasks ``ids`` with their history and edges."""
    return delete(tasks).where(tasks.c.id.in_(ids))



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
        .where(history.c.id > bound("after"))
        .order_by(history.c.id)
        .limit(bound("limit"))
    )


def select_outcomes(ids: list[int]):
    """(id, state, result, error) of tasks ``ids``: what a re-attached future needs."""
    return select(tasks.c.id, tasks.c.state, tasks.c.result, tasks.c.error).where(
        tasks.c.id.in_(ids))


def select_ids_tagged(tags: tuple[tuple[str, str], ...]):
    """Ids of the tasks carrying every tag in ``tags``, oldest first."""
    return tagged(select(tasks.c.id), tags).order_by(tasks.c.id)



def any_dependency():
    """One dependency edge, if there is any (is there a workflow with dependencies at all?)."""
    return select(dependencies.c.child_id).limit(1)


def insert_dependencies():
    """Insert (child_id, parent_id) edges."""
    return insert(dependencies)


def select_parents_of(child_ids: list[int]):
    """(child id, child state, child allows failure, parent id, parent state, the task the
    child follows (cached_from), the child's cache key and staging) for every dependency
    edge of ``child_ids``."""
    parent = tasks.alias("parent")
    return (
        select(dependencies.c.child_id, tasks.c.state, tasks.c.allow_parent_failure,
               dependencies.c.parent_id, parent.c.state, tasks.c.cached_from,
               tasks.c.cache_key, tasks.c.staging)
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
        .where(tasks.c.id == bound("b_id"), in_states([TaskState.AWAITING_PARENTS]))
        .values(state=bound("b_state"), error=bound("b_error"), updated_at=bound("b_now"))
    )
