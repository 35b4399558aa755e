"""Stores of an earlier schema version, made from a current one: the upgrade tests' start."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def rewind(db: Path, version: int, *statements: str) -> None:
    """Run ``statements`` on the SQLite store ``db`` (undoing what later versions added) and
    record it as schema version ``version``."""
    con = sqlite3.connect(db)
    for sql in statements:
        con.execute(sql)
    con.execute("UPDATE bf_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    con.commit()
    con.close()
