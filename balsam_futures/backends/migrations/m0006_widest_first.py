"""Version 6: the claim order puts wide runs first.

``ix_bf_tasks_order`` is rebuilt as priority, then nodes (widest first), then longest expected
run first, then id: within a priority, a run of many nodes is claimed before narrower ones,
and tasks of one width keep the order of version 4 (longest expected first, unknown last,
then submission).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection


def apply(conn: Connection) -> None:
    from ..schema import tasks

    conn.execute(text("DROP INDEX IF EXISTS ix_bf_tasks_order"))
    for index in tasks.indexes:
        if index.name == "ix_bf_tasks_order":
            index.create(conn)
