"""PostgreSQL's many-row statements write what their Core statements write.

Three writes have two forms in ``backends/statements/lifecycle.py``: the Core statement (run by
SQLite, one row per execution) and the raw SQL PostgreSQL sends through psycopg2's
``execute_values`` (many rows in one statement): ``insert_tasks``, ``insert_history`` and
``finish_running``.  Each pair is built from one list of fields; these tests check that the
two forms name the same columns, and that on a real server they leave the same rows.
"""

from __future__ import annotations

import itertools
import os
import re

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from balsam_futures.backends import LauncherInfo, TaskOutcome, open_store
from balsam_futures.backends import statements as q
from balsam_futures.backends.connection import Connections
from balsam_futures.backends.schema import history, runs, tasks
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = pytest.mark.timeout(60)

S = TaskState
_databases = itertools.count()


def _binds(template: str) -> set[str]:
    return set(re.findall(r"%\((\w+)\)s", template))


def _core_binds(stmt) -> set[str]:
    """The placeholders of a Core statement (``statements.common.bound``: no value of their
    own, every caller passes one), not its constants."""
    params = stmt.compile(dialect=postgresql.dialect()).params
    return {k for k, v in params.items() if v is None}


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("staged", [False, True])
def test_insert_tasks_forms_write_the_same_columns(cached, staged):
    own = set(q.TASK_OWN_FIELDS) | set(q.CACHE_FIELDS)  # own fields when cached; else NULL
    columns_written = sorted(set(q.TASK_CREATION_COLUMNS)
                             - (set() if cached else set(q.CACHE_FIELDS))
                             - (set() if staged else set(q.STAGING_FIELDS)))
    shared = sorted(set(columns_written) - own)
    sql, template, shared_template = q.pg_insert_tasks_shared(shared, cached)
    columns = re.match(r"INSERT INTO bf_tasks \(([^)]*)\)", sql).group(1).split(", ")
    assert sorted(columns) == columns_written == sorted(_core_binds(
        q.insert_tasks(cached, staged)))
    assert _binds(template) | _binds(shared_template) == set(columns_written)


def test_insert_history_forms_write_the_same_columns():
    sql, template = q.pg_insert_history_values()
    columns = re.search(r"INSERT INTO bf_history \(([^)]*)\)", sql).group(1).split(", ")
    assert columns == list(q.HISTORY_FIELDS)
    assert _binds(template) == set(q.HISTORY_FIELDS) == _core_binds(q.insert_history())


def _set_columns(sql: str) -> set[str]:
    clause = re.search(r" SET (.*?) (?:FROM|WHERE) ", sql).group(1)
    return {part.split("=")[0].strip() for part in clause.split(", ")}


def test_finish_running_forms_set_the_same_columns_from_the_same_fields():
    sql, template = q.pg_finish_running_values()
    core = q.finish_running()
    core_sql = str(core.compile(dialect=postgresql.dialect()))
    assert _set_columns(sql) == _set_columns(core_sql)
    assert _binds(template) == _core_binds(core)


def _spec(name: str, options: TaskOptions) -> TaskSpec:
    return TaskSpec(kind="python", payload=b"payload-" + name.encode(), options=options,
                    name=name)


def _workload(store) -> list:
    """The same writes on any store: tasks created with two sets of shared options, claimed,
    started (or not), one flagged for a kill, then outcomes of every kind."""
    store.clock = lambda: 1000.0
    mapped = TaskOptions(tags={"exp": "a"}, data={"n": 1}, timeout=30.0, max_retries=1,
                         resources=Resources(num_nodes=1, ranks_per_node=2))
    own = TaskOptions(description="one", priority=5, workdir="/w")
    ids = store.create_tasks([_spec(f"m{i}", mapped) for i in range(4)]
                             + [_spec("own", own), _spec("left", own)])
    lid = store.register_launcher(LauncherInfo("host", 1))
    claimed = sorted(t.id for t in store.claim(lid, 5))
    unclaimed = [i for i in ids if i not in claimed]
    assert len(unclaimed) == 1
    said = [store.exchange(lid, claimed[:3], [], 0).lost]
    said.append(store.kill([claimed[2]]))
    run = {"hosts": ["host"], "gpus": [[]], "cores": 2, "share": 1.0, "started_at": 990.0,
           "ended_at": 999.0}
    said.append(store.record_outcomes(lid, [
        TaskOutcome(claimed[0], outcome_path(S.RUN_DONE, 0, 1, True), result=b"r0",
                    return_code=0, run=run),
        TaskOutcome(claimed[1], outcome_path(S.RUN_ERROR, 0, 1, True), error=b"e1",
                    return_code=3, message="ran"),
        TaskOutcome(claimed[2], outcome_path(S.KILLED, 0, 1, True), error=b"k2"),
        # Claimed but never reported started: written from CLAIMED.
        TaskOutcome(claimed[3], outcome_path(S.RUN_ERROR, 1, 1, True), error=b"e3"),
        # Not held by this launcher: refused by both forms.
        TaskOutcome(unclaimed[0], outcome_path(S.RUN_DONE, 0, 0, True), result=b"no"),
    ]))
    # Started and ended between two round trips: the outcome names it as started too.
    said.append(store.exchange(lid, [claimed[4]], [TaskOutcome(
        claimed[4], outcome_path(S.RUN_DONE, 0, 0, True), result=b"r4")], 0).lost)
    return said


def _rows(store) -> dict[str, list[tuple]]:
    with store.engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(t.c.id))]
                for t in (tasks, history, runs)}


@pytest.mark.postgres
def test_raw_and_core_forms_leave_the_same_rows(pg_server):
    core, raw = (open_store(pg_server.create_database(
        f"raw_core_{os.getpid()}_{next(_databases)}")) for _ in range(2))
    try:
        # The Core forms, as SQLite runs them, on the same server.
        for name in ("_insert_tasks", "_insert_history", "_finish_running"):
            setattr(core, name, getattr(Connections, name).__get__(core))
        assert _workload(core) == _workload(raw)
        core_rows, raw_rows = _rows(core), _rows(raw)
        assert len(core_rows["bf_tasks"]) == 6 and len(core_rows["bf_history"]) > 10
        assert core_rows == raw_rows
    finally:
        core.close()
        raw.close()
