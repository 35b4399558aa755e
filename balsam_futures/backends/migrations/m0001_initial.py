"""Version 1: tasks, history, dependencies, launchers and the meta table."""

from __future__ import annotations

from sqlalchemy.engine import Connection


def apply(conn: Connection) -> None:
    from ..schema import metadata

    metadata.create_all(conn)
