"""Version 4: run-time estimates and the claim order that uses them.

bf_tasks gets ``label`` (the ``kind=`` option) and ``expected_s`` (expected run time, 0 when
unknown; backfilled from each task's timeout), the index of claimable tasks in claim order
(priority, longest expected first, id), the table of estimates per kind (``bf_kinds``), and
the meta row 'estimated_through': the highest task id whose expected run time a claim has
filled in from the estimates.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection


def apply(conn: Connection) -> None:
    from ..schema import kinds, tasks

    columns = {c["name"] for c in inspect(conn).get_columns("bf_tasks")}
    if "label" not in columns:
        conn.execute(text("ALTER TABLE bf_tasks ADD COLUMN label VARCHAR(256)"))
    if "expected_s" not in columns:
        conn.execute(text("ALTER TABLE bf_tasks ADD COLUMN expected_s FLOAT NOT NULL "
                          "DEFAULT 0"))
        conn.execute(text("UPDATE bf_tasks SET expected_s = wall_time_s "
                          "WHERE wall_time_s IS NOT NULL"))
    kinds.create(conn, checkfirst=True)
    for index in tasks.indexes:
        if index.name == "ix_bf_tasks_order":
            index.create(conn, checkfirst=True)
    found = conn.execute(text("SELECT count(*) FROM bf_meta WHERE key = 'estimated_through'"))
    if found.scalar() == 0:
        # No estimates exist yet: every task's timeout is all there is to know.
        conn.execute(text("INSERT INTO bf_meta (key, value) SELECT 'estimated_through', "
                          "CAST(COALESCE(MAX(id), 0) AS VARCHAR(32)) FROM bf_tasks"))
