"""A launcher's log: to its file, created private, or to standard error."""

from __future__ import annotations

import logging
import os

from .. import config

#: The process that opened the log (a forked launcher opens its own: see fork.py).
_opened_by: int | None = None


def open_log(log_file: str | None) -> None:
    """Send this process's log to ``log_file`` (None: standard error), once per process.

    The file is created private (0600), like the database: a log names the store, tasks
    and hosts.  An existing one is made private too and appended to.
    """
    global _opened_by
    if _opened_by == os.getpid():
        return  # by the launcher's __main__, before it started the workers
    _opened_by = os.getpid()
    handler = logging.StreamHandler()
    if log_file:
        # os.open with a mode, not FileHandler (0666 less the umask, often world-readable):
        # the file is private from its creation on; O_NOFOLLOW refuses a planted symlink.
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    logging.basicConfig(level=config.setting("LOG_LEVEL").upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
