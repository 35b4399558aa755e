"""A launcher as a child process of the executor (``BalsamExecutor(launcher=True)``).

The executor writes the launcher's configuration to the child's standard input and keeps the
pipe open; closing it (shutdown, or the executor's process dying) stops the launcher.

Two nudges spare the round trip of a task two poll intervals: a byte on that pipe when the
executor has stored tasks (the launcher looks at the store now), and a byte on a second
pipe when the launcher has committed starts or outcomes (the executor's watcher reads the
store now).  They carry no data: tasks and results still go only through the store, and a
lost nudge costs only the poll interval it would have saved.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path

from .config import LauncherConfig


class LauncherProcess:
    def __init__(self, db_url: str, cfg: LauncherConfig, log_file: Path) -> None:
        self.cfg = cfg
        self.log_file = log_file
        # nudge() (the executor's writer thread) against stop() closing the pipe: a write to
        # a closed descriptor's number could land in whatever file reused it.
        self._stdin_lock = threading.Lock()
        news_r, news_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "balsam_futures.launcher", str(log_file), str(news_w)],
                stdin=subprocess.PIPE,
                pass_fds=(news_w,),
                # Its own session: a Ctrl-C meant for the master must not kill running tasks;
                # the master stops the launcher itself, by closing the pipe.
                start_new_session=True,
            )
        except BaseException:
            os.close(news_r)
            raise
        finally:
            os.close(news_w)
        #: Readable when the launcher committed starts or outcomes (see the docstring).
        self.news_fd = news_r
        os.set_blocking(news_r, False)
        blob = pickle.dumps((db_url, cfg), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack("!Q", len(blob)) + blob)
        self.proc.stdin.flush()
        os.set_blocking(self.proc.stdin.fileno(), False)

    def nudge(self) -> None:
        """Tell the launcher that tasks were stored (a full pipe means it knows already)."""
        with self._stdin_lock:
            if self.proc.stdin.closed:
                return  # stopped: nothing to tell
            try:
                os.write(self.proc.stdin.fileno(), b"!")
            except OSError:
                pass  # full (it has a nudge pending), or the launcher is gone

    def read_news(self) -> bool:
        """Empty the news pipe (the watcher reads the store next); False once the launcher
        has exited and the pipe will never say anything again."""
        try:
            while True:
                if not os.read(self.news_fd, 4096):
                    return False
        except BlockingIOError:
            return True
        except OSError:
            return False

    def close_news(self) -> None:
        """Close the news pipe (by the watcher, which alone waits on it, when it ends)."""
        fd, self.news_fd = self.news_fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def returncode(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Close the control pipe and wait for the launcher to exit."""
        with self._stdin_lock:
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
