"""Version 2: the execution profile (bf_runs), batch jobs (bf_batch_jobs), and the batch job
a launcher runs in (bf_launchers.batch_job_id)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection


def apply(conn: Connection) -> None:
    from ..schema import batch_jobs, runs

    runs.create(conn, checkfirst=True)
    for index in runs.indexes:
        index.create(conn, checkfirst=True)
    batch_jobs.create(conn, checkfirst=True)
    for index in batch_jobs.indexes:
        index.create(conn, checkfirst=True)
    conn.execute(text("ALTER TABLE bf_launchers ADD COLUMN batch_job_id INTEGER"))
