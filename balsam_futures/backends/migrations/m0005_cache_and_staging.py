"""Version 5: memoization and data staging.

bf_tasks gets ``cache_key``, ``cached_from`` and ``staging``; the memoization index
``bf_cache``; the index of tasks waiting for their inputs (AWAITING_STAGE_IN); and the index
of held tasks is rebuilt, since tasks a launcher stages in or out (STAGING_IN, STAGING_OUT)
are held under its lease too.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection


def apply(conn: Connection) -> None:
    from ..schema import cache, tasks

    columns = {c["name"] for c in inspect(conn).get_columns("bf_tasks")}
    for name, sql_type in (("cache_key", "VARCHAR(64)"), ("cached_from", "INTEGER"),
                           ("staging", "JSON")):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE bf_tasks ADD COLUMN {name} {sql_type}"))
    cache.create(conn, checkfirst=True)
    conn.execute(text("DROP INDEX IF EXISTS ix_bf_tasks_held"))
    for index in tasks.indexes:
        if index.name in ("ix_bf_tasks_held", "ix_bf_tasks_stage_in", "ix_bf_tasks_cache_key"):
            index.create(conn, checkfirst=True)
