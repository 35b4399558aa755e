"""Task stores.  :func:`open_store` picks the backend from a database URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import (
    ClaimedTask,
    ClaimOffer,
    Exchange,
    ExecutorStore,
    LauncherInfo,
    LauncherStore,
    QueryStore,
    Store,
    TaskEvent,
    TaskOutcome,
    WatcherStore,
)

if TYPE_CHECKING:
    from .base import SqlStore


def __getattr__(name: str) -> Any:
    # SQLAlchemy (under .base) is imported on first use: the launcher imports the store's
    # data classes before its workers start, and SQLAlchemy is most of its start-up.
    if name == "SqlStore":
        from .base import SqlStore

        return SqlStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClaimedTask", "ClaimOffer", "Exchange", "ExecutorStore", "LauncherInfo",
           "LauncherStore", "QueryStore", "SqlStore", "Store", "TaskEvent", "TaskOutcome",
           "WatcherStore", "open_store", "redact_url"]

#: ``scheme://user:PASSWORD@``: greedy up to the last ``@`` of the token, since a password
#: typed without percent-encoding may itself hold ``@`` or ``/``.  The user part holds no
#: ``/``, so a SQLite path (``sqlite:////a:b@c``) is left alone.
_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#]*):\S*@")
#: ``password=VALUE`` as a URL query parameter (``?``/``&``/``;``) or a libpq keyword
#: (``host=h password=pw``), quoted or not; libpq accepts both forms.
_PASSWORD_PARAM = re.compile(r"(?i)(?P<head>(?:^|[?&;\s])password\s*=\s*)(?:'[^']*'|[^\s&;#]*)")


def redact_url(text: str) -> str:
    """``text`` (a database URL, or a message holding one) with every password masked.

    Both ways of giving a password are masked: ``postgresql://user:pw@host/db`` becomes
    ``postgresql://user:***@host/db`` and ``...?password=pw`` becomes ``...?password=***``.
    Works on URLs that do not parse (a bad port), so an error about one can show it.
    """
    text = _USERINFO_PASSWORD.sub(r"\g<head>:***@", text)
    return _PASSWORD_PARAM.sub(r"\g<head>***", text)


def _check_server_url(url: str) -> None:
    """Refuse a server URL that SQLAlchemy cannot parse, with the (masked) URL in the message;
    for a port that is not a number SQLAlchemy says only ``invalid literal for int()``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ValueError:  # raised only by int(port)
        raise ValueError(f"database URL {redact_url(url)}: the port must be a number; "
                         "write postgresql://USER@HOST[:PORT]/DB") from None
    except ArgumentError:
        raise ValueError(f"{redact_url(url)} is not a database URL; "
                         "write postgresql://USER@HOST[:PORT]/DB") from None


def open_store(url: str, listen: str = "all", *, upgrade: bool = False) -> Store:
    """Open (and on first use, create) the store at ``url``.

    ``sqlite:///path/to/balsam.db`` is the embedded default; ``postgresql://...`` serves
    many launchers at once.  ``listen`` says which changes ``changed()`` reports where the
    backend can tell them apart (PostgreSQL): "tasks" (claimable work, for launchers),
    "events" (state changes, for watchers) or "all".  ``upgrade=True`` brings a store of an
    older schema version up to date (``balsam-futures db upgrade``) instead of refusing it.
    A URL that is not one raises ``ValueError``, its password masked.
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///"):]), upgrade=upgrade)
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        from .postgres import PostgresStore

        _check_server_url(url)
        return PostgresStore("postgresql" + url[len(scheme):], listen=listen, upgrade=upgrade)
    # Not the text itself: a libpq "host=h password=pw" string would show its password.
    shown = repr(scheme) if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme) else \
        f"in {redact_url(url)!r}"
    raise ValueError(f"unsupported database URL scheme {shown}; "
                     "use sqlite:///PATH or postgresql://USER@HOST/DB")
