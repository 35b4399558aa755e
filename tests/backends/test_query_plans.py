"""The statements a launcher runs on a period, while it works or idles, and the lookups an
``rm`` makes per chunk of ids, read an index, not the table: their cost must not grow with the
finished rows a campaign leaves behind.

SQLite only: its EXPLAIN QUERY PLAN names a full scan as "SCAN bf_tasks" (with no index), and
its planner has no statistics to rescue a query whose WHERE does not repeat a partial index's
condition.  (PostgreSQL plans from statistics; its claim is covered by the launcher benchmark.)
"""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import sqlite

from balsam_futures.backends import open_store
from balsam_futures.backends import statements as q
from balsam_futures.backends.connection import RawStatement

pytestmark = pytest.mark.timeout(60)

#: (statement, parameters a launcher binds): the kill poll (every 50 ms under load), the
#: check for tasks too large for it (every 30 s while idle), and what a start refused reads.
PERIODIC = {
    "kill poll": (q.select_kill_requests(), {"lid": 1}),
    "unfit tasks": (q.select_unfit(), {"max_nodes": 1, "max_gpus": 0, "limit": 10}),
    "runs already started": (q.select_running_of(1, [1, 2, 3]), {}),
    "rm: followers of deleted tasks": (q.select_followers_of([1, 2, 3]), {}),
}


def plan_of(store, stmt, params: dict) -> list[str]:
    raw = RawStatement(stmt, sqlite.dialect())  # as the store compiles and binds it
    with store.engine.connect() as conn:
        return [str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {raw.sql}",
                                                         tuple(raw.params(params)))]


@pytest.mark.parametrize("what", sorted(PERIODIC))
def test_periodic_launcher_read_uses_an_index(tmp_path, what):
    store = open_store(f"sqlite:///{tmp_path / 'plans.db'}")
    try:
        stmt, params = PERIODIC[what]
        plan = plan_of(store, stmt, params)
        scans = [step for step in plan if step.startswith("SCAN bf_tasks")
                 and "USING" not in step]
        assert not scans, f"{what} scans bf_tasks: {plan}"
    finally:
        store.close()


def test_the_check_can_fail(tmp_path):
    """A query on an unindexed condition is reported as a scan (the test above can fail)."""
    from sqlalchemy import select

    from balsam_futures.backends.schema import tasks

    store = open_store(f"sqlite:///{tmp_path / 'plans.db'}")
    try:
        plan = plan_of(store, select(tasks.c.id).where(tasks.c.kill_requested == True),  # noqa: E712
                       {})
        assert any(step.startswith("SCAN bf_tasks") for step in plan), plan
    finally:
        store.close()
