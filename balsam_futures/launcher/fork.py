"""The executor's own launcher, forked from the executor's process where that is safe.

A fresh interpreter spends most of a launcher's start-up importing the store (SQLAlchemy:
0.3-0.5 s of CPU), which the executor's process has imported already: a fork is ready at
once, and ``BalsamExecutor()`` runs its first task that much sooner.  A fork copies the whole
process, so it is taken only when nothing copied can misbehave in the copy:

- one thread in the process, counted by the kernel (native threads too, such as a BLAS
  pool): a lock held by another thread at the fork would stay held in the copy for ever;
- no descriptor open on the SQLite database or its ``-wal``/``-shm`` files: SQLite keeps
  per-process lock state beside each open file, and a copy of it would believe it holds
  locks it does not (the executor closes its own connection first);
- a resident size under FORK_MAX_RSS: the launcher lives as long as the executor, and every
  page the executor writes meanwhile would be copied for it;
- no MPI, RDMA or CUDA library loaded (mpi4py imported, say): MPI libraries do not support
  a fork, and memory an RDMA library pinned is corrupted in the parent when the copy
  touches it;
- Linux (``/proc``, ``pidfd_open``), no ``mp_context`` other than "fork", and the setting
  ``BALSAM_FUTURES_LAUNCHER_START`` not "spawn".

Otherwise the launcher is a fresh interpreter (``python -m balsam_futures.launcher``).  In
the copy, before anything else runs, whatever the executor's process set up that a fresh
interpreter would not have is undone: descriptors other than the launcher's pipes and the
standard streams are closed, Python signal handlers, the signal wake-up descriptor, the
fault handler, logging, warnings, trace and exception hooks are reset; inherited objects
are frozen out of the garbage collector, so that no finalizer of the executor's (a
database connection's goodbye, a file's close) ever runs in the launcher; and it ends with
``os._exit``, running none of the executor's exit hooks.  Workers are always fresh
interpreters, started by the launcher.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import re
import select
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any

from .. import config

#: What ps and top call a forked launcher (at most 15 characters).
PROCESS_NAME = "bf-launcher"
#: Largest resident size (bytes) of the executor's process that is forked; larger ones start
#: a fresh interpreter (see the module docstring).
FORK_MAX_RSS = 1 << 30


def fork_refusal(mp_context: Any, db_path: Path | None) -> str | None:
    """Why the executor's launcher must not be forked now, or None when it may be."""
    if config.setting("LAUNCHER_START") == "spawn":
        return "BALSAM_FUTURES_LAUNCHER_START=spawn"
    if mp_context is not None:
        method = getattr(mp_context, "get_start_method", lambda: None)()
        if method != "fork":
            return f"mp_context asks for {method!r}"
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")
            and os.path.isdir("/proc/self/task")):
        return "not Linux"
    unsafe = _unsafe_library()  # first: MPI starts threads of its own, the lesser reason
    if unsafe is not None:
        return f"{unsafe} is loaded"
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        return f"{threads} threads"
    rss = _resident_bytes()
    if rss is None or rss > FORK_MAX_RSS:
        return f"resident size {rss}"
    if db_path is not None and _open_on(db_path):
        return f"{db_path} is open in this process"
    return None


#: Shared libraries that do not survive a fork of their process (see the module docstring).
_FORK_UNSAFE = re.compile(r"/lib(mpi|mpich|ibverbs|fabric|uc[pst]|psm\w*|cuda|nccl)[.\w]*\.so")


def _unsafe_library() -> str | None:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                found = _FORK_UNSAFE.search(line)
                if found is not None:
                    return found.group(0).lstrip("/")
    except OSError:
        return "no /proc/self/maps"
    return None


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _open_on(db_path: Path) -> bool:
    """Whether a descriptor of this process is open on the database or its side files."""
    base = os.path.realpath(db_path)
    files = {base, base + "-wal", base + "-shm", base + "-journal"}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in files:
                return True
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return False


class ForkedLauncher:
    """The forked launcher's process, as far as the executor needs it (``subprocess.Popen``
    has no fork without exec): ``pid``, ``poll``, ``wait``, ``kill``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped by someone else (SIGCHLD ignored, or a handler of the user's): its
                # pidfd still says whether it exited, though not with what code.
                if self._exited(0):
                    self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            if self.returncode is not None:
                os.close(self._pidfd)
        return self.returncode

    def _exited(self, timeout: float | None) -> bool:
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code; None if it is still running after ``timeout`` seconds."""
        if self.returncode is None:
            self._exited(timeout)
        return self.poll()

    def kill(self) -> None:
        if self.returncode is None:
            # Through the pidfd: a pid of a process already reaped may name another one.
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


def fork_launcher(db_url: str, cfg: Any, log_file: Path, control_r: int,
                  news_w: int) -> ForkedLauncher:
    """Fork, and run the launcher in the copy on the two pipe ends given; the caller closes
    them in this process."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()  # else the copy would hold (never to write) the same bytes
        except (OSError, ValueError):
            pass
    pid = os.fork()
    if pid:
        return ForkedLauncher(pid)
    code = 1
    try:
        _become_fresh((control_r, news_w))
        from .logfile import open_log
        from .pilot import run_launcher
        from .workers.pool import early_head_pool

        open_log(str(log_file))
        run_launcher(db_url, cfg, control_fd=control_r, log_file=str(log_file),
                     executor_fd=news_w, pool=early_head_pool(cfg, db_url))
        code = 0
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        os._exit(code)


def _become_fresh(keep: tuple[int, ...]) -> None:
    """Undo, in the copy, what the executor's process set up (see the module docstring)."""
    gc.freeze()  # nothing inherited is ever collected: no finalizer of theirs runs here
    signal.set_wakeup_fd(-1)  # before closing descriptors: it could name a reused one
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    faulthandler_on = faulthandler.is_enabled()
    faulthandler.disable()  # its file may be a descriptor closed below
    faulthandler.cancel_dump_traceback_later()
    os.setsid()  # a Ctrl-C meant for the executor must not stop running tasks (child.py)
    try:
        # Its name in ps and top (its command line is the master's: it is a copy).
        with open("/proc/self/comm", "w") as f:
            f.write(PROCESS_NAME)
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    sys.stdout = sys.__stdout__
    sys.stderr = sys.__stderr__
    if faulthandler_on and sys.__stderr__ is not None:
        faulthandler.enable(sys.__stderr__)
    sys.excepthook = sys.__excepthook__
    sys.unraisablehook = sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    sys.settrace(None)
    sys.setprofile(None)
    threading.settrace(None)  # type: ignore[arg-type]
    threading.setprofile(None)  # type: ignore[arg-type]
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                     ResourceWarning):
        warnings.simplefilter("ignore", category)  # a fresh interpreter's defaults
    warnings.showwarning = getattr(warnings, "_showwarning_orig", warnings.showwarning)
    _fresh_logging()


def _fresh_logging() -> None:
    """No handler of the executor's process (their descriptors are closed: they are dropped,
    not closed), and this package's loggers as a fresh interpreter has them (levels that
    libraries set, SQLAlchemy's, are kept); logfile.open_log then opens the launcher's."""
    logging.disable(logging.NOTSET)
    root = logging.getLogger()
    root.handlers.clear()
    root.filters.clear()
    root.setLevel(logging.WARNING)
    for name, lg in logging.Logger.manager.loggerDict.items():
        if not isinstance(lg, logging.Logger):
            continue
        lg.handlers.clear()
        if name == "balsam_futures" or name.startswith("balsam_futures."):
            lg.filters.clear()
            lg.setLevel(logging.NOTSET)
            lg.disabled = False
            lg.propagate = True
