"""Every ``BALSAM_FUTURES_*`` setting, read in one place.

Library code asks :func:`setting` for a value instead of reading ``os.environ``, so the name,
default, type and accepted range of each knob are visible here and nowhere else.  A value is
checked where it is read: a bad one raises ``ValueError`` naming the variable, instead of
reaching a thread (the executor's watcher, a launcher's heartbeat) that would die of it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "BALSAM_FUTURES_"

#: The level names ``logging`` accepts (``logging.getLevelNamesMapping()`` in 3.11+).
LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: type
    help: str
    #: Whether a converted value is in range, and the range in words for the error.
    valid: Callable[[Any], bool] = lambda _value: True
    accepts: str = ""
    #: The value may hold a password: errors never echo it.
    secret: bool = False


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("SITE", None, str,
                "site directory (database, data/, logs/); default ./.balsam_futures",
                valid=lambda v: "\0" not in v, accepts="a directory path (no NUL byte)"),
        Setting("DB_URL", None, str,
                "database URL, e.g. postgresql://user@host/db; default sqlite:///<site>/balsam.db",
                valid=lambda v: bool(_URL_SCHEME.match(v)),
                accepts="a URL such as sqlite:///PATH or postgresql://USER@HOST/DB", secret=True),
        Setting("MAX_PAYLOAD_BYTES", 256 * 1024 * 1024, int,
                "largest serialized callable+arguments or result accepted",
                valid=lambda v: v >= 1, accepts="an integer >= 1"),
        # <= 0 would presume every launcher dead at once; nan/inf would never presume any.
        Setting("LEASE_SECONDS", 30.0, float,
                "default lease of a launcher: silent this long, it is presumed dead and its "
                "tasks requeued",
                valid=_positive_finite, accepts="a finite number of seconds > 0"),
        # Claims take the longest expected task first; one that waited this long is taken in
        # submission order instead, so short tasks are never passed over for ever.  Smaller:
        # more claims in submission order (worse packing); larger: a longer worst-case wait.
        Setting("STARVATION_SECONDS", 3600.0, float,
                "a task claimable for longer than this is claimed in submission order, ahead "
                "of longer tasks of its priority",
                valid=_positive_finite, accepts="a finite number of seconds > 0"),
        Setting("STAGE_RETRIES", 3, int,
                "attempts a launcher makes at a task's stage_in or stage_out transfer before "
                "the task fails",
                valid=lambda v: v >= 1, accepts="an integer >= 1"),
        Setting("STAGE_SLOTS", 4, int,
                "transfer batches a launcher runs at once (one per endpoint and destination)",
                valid=lambda v: v >= 1, accepts="an integer >= 1"),
        Setting("GLOBUS_ENDPOINT", None, str,
                "this site's Globus endpoint (collection) id: the local side of globus:// "
                "stage_in and stage_out transfers",
                valid=lambda v: bool(re.fullmatch(r"[0-9a-fA-F-]{36}", v)),
                accepts="a UUID such as 6c54cade-bde5-45c1-bdea-f4bd71dba2cc"),
        Setting("GLOBUS_TOKEN", None, str,
                "a Globus Transfer access token for globus:// transfers (see "
                "docs/workflows.md, \"Data staging\")", secret=True),
        Setting("LAUNCHER_START", "auto", str,
                "how an executor starts its own launcher: auto (forked from the executor's "
                "process when that is safe, else a fresh interpreter) or spawn (always a "
                "fresh interpreter)",
                valid=lambda v: v in ("auto", "spawn"), accepts="auto or spawn"),
        Setting("LOG_LEVEL", "INFO", str, "launcher log level",
                valid=lambda v: v.upper() in LOG_LEVELS,
                accepts="one of " + ", ".join(LOG_LEVELS) + " (any case)"),
        # Set by the launcher for every task it runs; read by current_task() and by a
        # BalsamExecutor created inside a task, which then joins the same store.
        Setting("TASK_ID", None, int, "id of the task this process runs (set by the launcher)",
                valid=lambda v: v >= 1, accepts="an integer >= 1"),
        # Set by a per-node agent in each of its workers (launcher/agents/node.py).
        Setting("AGENT", None, str,
                "node whose agent started this worker process (set by the agent)"),
    ]
}


def setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """Return the value of ``BALSAM_FUTURES_<name>`` converted to its type, or its default.

    Raises ``ValueError`` naming the variable, its value and the accepted range when the
    value does not convert or is out of range (an empty value means the default).
    """
    spec = SETTINGS[name]
    raw = (os.environ if environ is None else environ).get(PREFIX + name)
    if raw is None or raw == "":
        return spec.default
    shown = "(value not shown: it may hold a password)" if spec.secret else repr(raw)
    try:
        value = spec.kind(raw)
    except ValueError:
        raise ValueError(
            f"{PREFIX}{name}={shown} is not a valid {spec.kind.__name__}: expected "
            f"{spec.accepts} ({spec.help})"
        ) from None
    if not spec.valid(value):
        raise ValueError(
            f"{PREFIX}{name}={shown} is out of range: expected {spec.accepts} ({spec.help})")
    return value


def env_name(name: str) -> str:
    """The environment variable that carries setting ``name``."""
    if name not in SETTINGS:
        raise KeyError(name)
    return PREFIX + name
