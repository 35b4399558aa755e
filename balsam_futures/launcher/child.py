"""A launcher as a child process of the executor (``BalsamExecutor(launcher=True)``).

The child is a fork of the executor's process where that is safe (fork.py: it is ready
without importing anything), else a fresh interpreter, to which the executor writes the
launcher's configuration on standard input.  Either way the executor keeps a control pipe
to it open; closing it (shutdown, or the executor's process dying) stops the launcher.

Two nudges spare the round trip of a task two poll intervals: a byte on that pipe when the
executor has stored tasks (the launcher looks at the store now), and a byte on a second
pipe when the launcher has committed starts or outcomes (the executor's watcher reads the
store now).  They carry no data: tasks and results still go only through the store, and a
lost nudge costs only the poll interval it would have saved.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from .config import LauncherConfig
from .fork import fork_launcher, fork_refusal

log = logging.getLogger(__name__)


class LauncherProcess:
    """``db_path``: the SQLite file of the store (None for a server), which must not be open
    in this process for a fork; ``mp_context``: the executor's, see fork.py."""

    def __init__(self, db_url: str, cfg: LauncherConfig, log_file: Path, *,
                 mp_context: Any = None, db_path: Path | None = None) -> None:
        self.cfg = cfg
        self.log_file = log_file
        # nudge() (the executor's writer thread) against stop() closing the pipe: a write to
        # a closed descriptor's number could land in whatever file reused it.
        self._control_lock = threading.Lock()
        #: Why the launcher is a fresh interpreter and not a fork (None: forked).
        self.spawned_because = fork_refusal(mp_context, db_path)
        self.proc: Any
        news_r, news_w = os.pipe()
        try:
            if self.spawned_because is None:
                try:
                    self._fork(db_url, cfg, log_file, news_w)
                except OSError as exc:  # no memory for the copy, say
                    self.spawned_because = f"fork failed: {exc}"
            if self.spawned_because is not None:
                log.debug("launcher %s starts as a fresh interpreter, not a fork: %s",
                          cfg.launcher_id, self.spawned_because)
                self._spawn(db_url, cfg, log_file, news_w)
        except BaseException:
            os.close(news_r)
            raise
        finally:
            os.close(news_w)
        #: Readable when the launcher committed starts or outcomes (see the docstring).
        self.news_fd = news_r
        os.set_blocking(news_r, False)
        os.set_blocking(self._control_fd, False)
        self._control_open = True
        _LIVE.add(self)

    def _forget_pipes(self) -> None:
        """In a process forked from the executor's: let go of this launcher's pipes (the
        descriptors now read /dev/null, so nothing that closes them later hits another
        file).  See _after_fork_in_child."""
        # Only descriptors still this launcher's: a number closed already may be another
        # file's by now (a pipe, the next launcher's control pipe).  stop() and close_news()
        # mark theirs closed before closing them.  No lock: a thread holding it at the fork
        # did not come along.
        fds = [fd for fd, still in ((self._control_fd, self._control_open),
                                    (self.news_fd, self.news_fd >= 0)) if still]
        self._control_open = False
        if not fds:
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in fds:
                os.dup2(devnull, fd, inheritable=False)
        finally:
            os.close(devnull)

    def _fork(self, db_url: str, cfg: LauncherConfig, log_file: Path, news_w: int) -> None:
        control_r, control_w = os.pipe()
        try:
            self.proc = fork_launcher(db_url, cfg, log_file, control_r, news_w)
        except BaseException:
            os.close(control_w)
            raise
        finally:
            os.close(control_r)
        self._control_fd = control_w
        self._control_file = None

    def _spawn(self, db_url: str, cfg: LauncherConfig, log_file: Path, news_w: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "balsam_futures.launcher", str(log_file), str(news_w)],
            stdin=subprocess.PIPE,
            pass_fds=(news_w,),
            # Its own session: a Ctrl-C meant for the master must not kill running tasks;
            # the master stops the launcher itself, by closing the pipe.
            start_new_session=True,
        )
        blob = pickle.dumps((db_url, cfg), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack("!Q", len(blob)) + blob)
        self.proc.stdin.flush()
        self._control_file = self.proc.stdin
        self._control_fd = self.proc.stdin.fileno()

    def nudge(self) -> None:
        """Tell the launcher that tasks were stored (a full pipe means it knows already)."""
        with self._control_lock:
            if not self._control_open:
                return  # stopped: nothing to tell
            try:
                os.write(self._control_fd, b"!")
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
        with self._control_lock:
            if self._control_open:
                self._control_open = False
                try:
                    if self._control_file is not None:
                        self._control_file.close()
                    else:
                        os.close(self._control_fd)
                except OSError:
                    pass
        _LIVE.discard(self)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            self.proc.kill()
            code = self.proc.wait()
        return code


#: The launchers this process started and has not closed yet.
_LIVE: weakref.WeakSet[LauncherProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A process forked from the executor's (a ProcessPoolExecutor's or multiprocessing's
    worker, a user's os.fork) drops its copies of the launchers' pipes.  A copy of a control
    pipe kept it open after the executor closed its end, so the launcher never saw its end:
    shutdown() waited 30 s and then killed it (its workers reported the launcher gone), and
    the death of the executor's process went unnoticed while the copy lived."""
    for launcher in list(_LIVE):
        launcher._forget_pipes()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
