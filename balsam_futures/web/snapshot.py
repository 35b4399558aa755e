"""The page's reads, refreshed by one background thread: however many browsers poll, the
store is read once per period, and a page opened finds its data already read.

    refresher thread ──every `every` s──> read each view (counts, summary) ──> latest values
    request ──get(name)──> the latest value (read at once if there is none yet)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: How long a request waits for the refresher's first pass before reading by itself (a first
#: pass slower than this means a store in trouble; the request then shows the error).
FIRST_READ_WAIT_S = 30.0


class Snapshots:
    """The latest value of each named read; ``start`` refreshes them every ``every`` s."""

    def __init__(self, reads: Mapping[str, Callable[[], Any]], every: float) -> None:
        if every <= 0:
            raise ValueError(f"every must be > 0 seconds, not {every!r}")
        self.reads = dict(reads)
        self.every = every
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()  # set once every view was read (or tried) once
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> Any:
        if self._thread is not None and self._thread.is_alive():
            # Its first pass is under way: wait for it rather than read the same twice.
            self._first.wait(FIRST_READ_WAIT_S)
        with self._lock:
            if name in self._values:
                return self._values[name]
        value = self.reads[name]()  # nothing read yet: the caller waits for this one read
        with self._lock:
            self._values.setdefault(name, value)
        return value

    def refresh(self) -> None:
        """Read every view once (a failed read keeps the previous value, and is logged)."""
        for name, read in self.reads.items():
            try:
                value = read()
            except Exception:  # noqa: BLE001 - the store may be busy or gone for a moment
                log.warning("campaign page: reading %s failed", name, exc_info=True)
                continue
            with self._lock:
                self._values[name] = value

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bf-web-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._first.set()
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
