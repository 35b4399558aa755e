"""Version 3: each launcher's own lease (bf_launchers.lease_s), the index of held tasks
(CLAIMED or RUNNING) replacing the index of RUNNING ones, and the count of deleted tasks
(bf_meta 'deletions', which watchers follow), and when the store was last blocked for
every writer (bf_meta 'blocked_until', from which lease sweeps count)."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection


def apply(conn: Connection) -> None:
    from ..schema import tasks

    columns = {c["name"] for c in inspect(conn).get_columns("bf_launchers")}
    if "lease_s" not in columns:
        conn.execute(text("ALTER TABLE bf_launchers ADD COLUMN lease_s FLOAT NOT NULL "
                          "DEFAULT 30.0"))
    conn.execute(text("DROP INDEX IF EXISTS ix_bf_tasks_running"))
    for index in tasks.indexes:
        if index.name == "ix_bf_tasks_held":
            index.create(conn, checkfirst=True)
    for key in ("deletions", "blocked_until"):
        found = conn.execute(text("SELECT count(*) FROM bf_meta WHERE key = :k"), {"k": key})
        if found.scalar() == 0:
            conn.execute(text("INSERT INTO bf_meta (key, value) VALUES (:k, '0')"), {"k": key})
