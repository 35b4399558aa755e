"""Task stores.  :func:`open_store` picks the backend from a database URL."""

from __future__ import annotations

from pathlib import Path

from .base import ClaimedTask, ClaimOffer, LauncherInfo, SqlStore, TaskEvent, TaskOutcome

__all__ = ["ClaimedTask", "ClaimOffer", "LauncherInfo", "SqlStore", "TaskEvent", "TaskOutcome", "open_store"]


def open_store(url: str, listen: str = "all", *, upgrade: bool = False) -> SqlStore:
    """Open (and on first use, create) the store at ``url``.

    ``sqlite:///path/to/balsam.db`` is the embedded default; ``postgresql://...`` serves
    many launchers at once.  ``listen`` says which changes ``changed()`` reports where the
    backend can tell them apart (PostgreSQL): "tasks" (claimable work, for launchers),
    "events" (state changes, for watchers) or "all".  ``upgrade=True`` brings a store of an
    older schema version up to date (``balsam-futures db upgrade``) instead of refusing it.
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///"):]), upgrade=upgrade)
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        from .postgres import PostgresStore

        return PostgresStore("postgresql" + url[len(scheme):], listen=listen, upgrade=upgrade)
    raise ValueError(f"unsupported database URL scheme {scheme!r}; "
                     "use sqlite:///PATH or postgresql://USER@HOST/DB")
