"""A launcher as a child process of the executor (``BalsamExecutor(launcher=True)``).

The executor writes the launcher's configuration to the child's standard input and keeps the
pipe open; closing it (shutdown, or the executor's process dying) stops the launcher.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

from .config import LauncherConfig


class LauncherProcess:
    def __init__(self, db_url: str, cfg: LauncherConfig, log_file: Path) -> None:
        self.cfg = cfg
        self.log_file = log_file
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "balsam_futures.launcher", str(log_file)],
            stdin=subprocess.PIPE,
            # Its own session: a Ctrl-C meant for the master must not kill running tasks;
            # the master stops the launcher itself, by closing the pipe.
            start_new_session=True,
        )
        blob = pickle.dumps((db_url, cfg), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack("!Q", len(blob)) + blob)
        self.proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def returncode(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Close the control pipe and wait for the launcher to exit."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def worker_python_path() -> str:
    """This interpreter's import path, minus what every interpreter already has.

    Workers are fresh interpreters; with this as their PYTHONPATH they import the same user
    modules as the master (ProcessPoolExecutor's spawn passes ``sys.path`` the same way).
    """
    base = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    entries = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if any(path == b or path.startswith(b + os.sep) for b in base):
            continue
        if path not in entries:
            entries.append(path)
    existing = os.environ.get("PYTHONPATH")
    if existing:
        entries.append(existing)
    return os.pathsep.join(entries)
