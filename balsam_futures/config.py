"""Every ``BALSAM_FUTURES_*`` setting, read in one place.

Library code asks :func:`setting` for a value instead of reading ``os.environ``, so the name,
default and type of each knob are visible here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PREFIX = "BALSAM_FUTURES_"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: type
    help: str


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("SITE", None, str, "site directory (database, data/, logs/); default ./.balsam_futures"),
        Setting("DB_URL", None, str,
                "database URL, e.g. postgresql://user@host/db; default sqlite:///<site>/balsam.db"),
        Setting("MAX_PAYLOAD_BYTES", 256 * 1024 * 1024, int,
                "largest serialized callable+arguments or result accepted"),
        Setting("LEASE_SECONDS", 30.0, float,
                "a launcher silent this long is presumed dead and its running tasks are requeued"),
        Setting("LOG_LEVEL", "INFO", str, "launcher log level"),
        # Set by the launcher for every task it runs; read by current_task() and by a
        # BalsamExecutor created inside a task, which then joins the same store.
        Setting("TASK_ID", None, int, "id of the task this process runs (set by the launcher)"),
    ]
}


def setting(name: str, environ: dict[str, str] | None = None) -> Any:
    """Return the value of ``BALSAM_FUTURES_<name>`` converted to its type, or its default."""
    spec = SETTINGS[name]
    raw = (os.environ if environ is None else environ).get(PREFIX + name)
    if raw is None or raw == "":
        return spec.default
    try:
        return spec.kind(raw)
    except ValueError:
        raise ValueError(
            f"{PREFIX}{name}={raw!r} is not a valid {spec.kind.__name__}: {spec.help}"
        ) from None


def env_name(name: str) -> str:
    """The environment variable that carries setting ``name``."""
    if name not in SETTINGS:
        raise KeyError(name)
    return PREFIX + name
