"""A wake-up call that ``select()`` can wait on together with sockets.

A ``threading.Event`` cannot be waited on beside a socket, and the launcher's store thread and
the executor's watcher want to sleep until either another thread has news for them or the
store announces a change (PostgreSQL NOTIFY arrives on a socket).  A pipe can be both.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence


class Waker:
    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        # Set and not yet cleared: a byte is in the pipe, so a second set() need not write
        # (a launcher sets its wakers several times per task; each write is a system call).
        self._pending = False

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        """Wake the waiter (safe from a signal handler; cheap if already set)."""
        if self._pending:
            return
        self._pending = True
        try:
            os.write(self._w, b"!")
        except (BlockingIOError, OSError):
            pass  # full (the waiter wakes anyway) or closed

    def clear(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        # After the pipe is empty: a set() between the two skipped its write, and what it
        # announces is seen by the waiter, which looks after clearing.
        self._pending = False

    def wait(self, timeout: float | None, also: Sequence[int] = ()) -> list[int]:
        """Sleep until set, one of ``also`` is readable, or ``timeout``; returns what is
        readable (the waker is cleared)."""
        try:
            ready = select.select([self._r, *also], [], [], timeout)[0]
        except (ValueError, OSError):  # a descriptor in ``also`` was closed meanwhile
            return []
        if self._r in ready:
            self.clear()
        return ready

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
