"""Helpers and the task function of the fault campaigns (test_campaigns.py).

Launchers import this module through PYTHONPATH (see :func:`env`), so ``guarded`` must stay a
module-level function of a top-level module named ``campaign``.

Overlap detection: each run of a task takes a non-blocking exclusive ``flock`` on
``<lockdir>/<key>.lock`` for its whole duration.  If the lock is held already, another run of
the same task is alive at this moment: the run appends a line to ``<lockdir>/overlaps`` and
still proceeds.  The lock dies with the process, so a run that was killed frees it.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The states in which a task's story ends (nothing happens to it without a manual retry).
FINAL_STATES = {"JOB_FINISHED", "FAILED", "KILLED", "CANCELLED"}
HELD_STATES = {"CLAIMED", "RUNNING"}


# -- the task ---------------------------------------------------------------------------------


def guarded(key: str, seconds: float, lockdir: str) -> str:
    """Sleep ``seconds`` holding ``<lockdir>/<key>.lock``; note it when another run holds it."""
    fd = os.open(os.path.join(lockdir, f"{key}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            line = f"{key} pid={os.getpid()} at={time.time():.3f}\n"
            out = os.open(os.path.join(lockdir, "overlaps"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(out, line.encode())
            finally:
                os.close(out)
        time.sleep(seconds)
        return key
    finally:
        os.close(fd)  # the only descriptor of this open file: the lock goes with it


def duration(i: int) -> float:
    """10-50 ms, spread over the campaign (30 ms on average)."""
    return 0.010 + 0.040 * ((i * 37) % 101) / 100


def keys(name: str, n: int) -> list[str]:
    return [f"{name}-{i}" for i in range(n)]


def submit(ex, name: str, n: int, lockdir: Path) -> list[int]:
    """Submit the campaign's ``n`` tasks, tagged ``campaign=<name>``; returns their ids once
    every one is in the store."""
    run = ex.options(tags={"campaign": name})
    futs = [run.submit(guarded, key, duration(i), str(lockdir))
            for i, key in enumerate(keys(name, n))]
    assert ex.flush(timeout=60), "the tasks could not be stored"
    return [f.task_id for f in futs]


# -- processes --------------------------------------------------------------------------------


def env(**extra: str) -> dict[str, str]:
    """The environment of a launcher (or master) that must import this module."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), out.get("PYTHONPATH", "")] if p)
    out.update(extra)
    return out


def cli(*args: str) -> list[str]:
    """The argv of ``balsam-futures ARGS`` (the CLI, with this interpreter)."""
    return [sys.executable, "-m", "balsam_futures", *map(str, args)]


@dataclass
class Launcher:
    proc: subprocess.Popen
    log: Path
    launcher_id: int | None = None
    workers: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def start_launcher(site: Path, logdir: Path, *, db_url: str | None = None, workers: int = 2,
                   lease: float = 3.0, idle_timeout: float | None = None) -> Launcher:
    """``balsam-futures launcher --site SITE --workers N --lease S`` in the background, its
    output in a log file of its own (outside the site: the site may be full or read-only)."""
    argv = cli("launcher", "--site", site, "--workers", workers, "--lease", lease)
    if db_url is not None:
        argv += ["--db-url", db_url]
    if idle_timeout is not None:
        argv += ["--idle-timeout", str(idle_timeout)]
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"launcher-{len(list(logdir.glob('launcher-*.log')))}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env(), stdout=out, stderr=subprocess.STDOUT)
    return Launcher(proc, log)


def wait_started(launcher: Launcher, timeout: float = 60.0) -> int:
    """Wait for the launcher to say ``launcher N started``; returns N (its id in the store)
    and notes its workers."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"launcher (\d+) started", launcher.text())
        if found:
            launcher.launcher_id = int(found.group(1))
            break
        assert launcher.proc.poll() is None, \
            f"the launcher exited ({launcher.proc.returncode}):\n{launcher.text()[-3000:]}"
        assert time.monotonic() < deadline, f"the launcher never started:\n{launcher.text()}"
        time.sleep(0.02)
    launcher.workers = children(launcher.pid)
    return launcher.launcher_id


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids, timeout: float) -> list[int]:
    """Wait up to ``timeout`` for ``pids`` to die; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if alive(p)]
    return left


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_all(procs) -> None:
    """Stop launchers (or masters) and whatever they started, even a stopped one."""
    procs = [p for p in procs if p is not None]
    popens = [p.proc if isinstance(p, Launcher) else p for p in procs]
    below = {pid for p in popens for pid in children(p.pid)}
    for p in popens:
        if p.poll() is None:
            _signal(p.pid, signal.SIGCONT)  # a stopped process handles no SIGTERM
            _signal(p.pid, signal.SIGTERM)
    for p in popens:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal(p.pid, signal.SIGKILL)
            p.wait()
    # Workers die with their launcher; anything of ours that outlived it goes now.
    for pid in below:
        below |= set(children(pid))
    for pid in wait_gone(below, 3.0):
        _signal(pid, signal.SIGKILL)


def flock_holders(path: Path) -> set[int]:
    """Pids holding an exclusive ``flock`` on ``path`` (from /proc/locks)."""
    st = os.stat(path)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            # "N: FLOCK ADVISORY WRITE PID DEV:INO 0 EOF"; waiters are shown as "N: -> ..."
            if fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and fields[5] == where:
                holders.add(int(fields[4]))
    return holders


def stop_process(pid: int, *, holding: bool, lock: Path, timeout: float = 30.0) -> None:
    """SIGSTOP ``pid`` at a moment it holds the exclusive flock on ``lock`` (``holding``), or
    at one it does not.  A process stopped while it waits for the lock never gets it (the
    kernel grants a flock in the waiter's own context), so the state seen just after the stop
    is the state for the whole stop."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"pid {pid} never {'held' if holding else 'left'} " \
                                            f"the lock {lock}"
        if (pid in flock_holders(lock)) == holding:
            os.kill(pid, signal.SIGSTOP)
            wait_until(f"pid {pid} to stop", lambda: _proc_state(pid) in ("T", "t"), 5, 0.001)
            if (pid in flock_holders(lock)) == holding:
                return
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.0005 if holding else 0.003)


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# -- the store --------------------------------------------------------------------------------


def states(store, ids) -> dict[int, dict]:
    """Task rows (state, launcher_id...) by id."""
    return {row["id"]: row for row in store.get_tasks(list(ids))}


#: A campaign whose tasks (10-50 ms each) have not moved for this long is stuck: stop waiting.
STALL_S = 15.0


def wait_final(store, ids, timeout: float, launchers=()) -> None:
    """Wait until every task is in a final state or ``timeout`` passed; an outage of the
    store meanwhile is waited out.  Stop waiting early when nothing can move any more: no
    task changed state for STALL_S, or (``launchers``: every launcher of the campaign) none of
    them runs."""
    from balsam_futures.errors import StoreError

    deadline = time.monotonic() + timeout
    seen, since = None, time.monotonic()
    while time.monotonic() < deadline:
        if launchers and all(launcher.proc.poll() is not None for launcher in launchers):
            time.sleep(0.5)  # what they wrote last is visible by now
            return
        try:
            rows = states(store, ids)
        except StoreError:
            rows = None
        if rows is not None:
            if len(rows) == len(ids) and all(r["state"] in FINAL_STATES for r in rows.values()):
                return
            now_seen = sorted((i, r["state"], r["launcher_id"]) for i, r in rows.items())
            if now_seen != seen:
                seen, since = now_seen, time.monotonic()
            elif time.monotonic() - since >= STALL_S:
                return
        time.sleep(0.1)


def wait_until(what, condition, timeout: float, interval: float = 0.02):
    """Poll ``condition()`` until it is true (returns its value) or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def held_by(store, ids, launcher_id: int) -> list[int]:
    return [i for i, r in states(store, ids).items()
            if r["state"] in HELD_STATES and r["launcher_id"] == launcher_id]


def finished_count(store, ids) -> int:
    return sum(1 for r in states(store, ids).values() if r["state"] == "JOB_FINISHED")


def histories(store, ids) -> dict[int, list[dict]]:
    return {i: store.history(i) for i in ids}


@dataclass(repr=False)
class Tally:
    name: str
    submitted: int
    finished: int
    overlapping_runs: int
    lost: int
    final_states: Counter
    runs: Counter  # task id -> number of runs started (RUNNING entries in its history)
    overlaps: list[str]

    def __repr__(self) -> str:
        return f"Tally({self.line()})"

    def line(self) -> str:
        return (f"campaign={self.name} submitted={self.submitted} finished={self.finished} "
                f"overlapping_runs={self.overlapping_runs} lost={self.lost}")

    def check(self) -> None:
        """Print the campaign's line and assert the promise."""
        print(f"\n{self.line()}", flush=True)
        assert self.overlapping_runs == 0, \
            f"{self.line()}: runs of one task overlapped: {self.overlaps[:10]}"
        assert self.lost == 0, f"{self.line()}: final states {dict(self.final_states)}"
        assert self.finished == self.submitted


def tally(name: str, store, ids, lockdir: Path) -> Tally:
    rows = states(store, ids)
    final = Counter(r["state"] for r in rows.values())
    finished = final.get("JOB_FINISHED", 0)
    runs = Counter({i: sum(1 for h in hist if h["to_state"] == "RUNNING")
                    for i, hist in histories(store, ids).items()})
    path = Path(lockdir) / "overlaps"
    overlaps = path.read_text().splitlines() if path.exists() else []
    return Tally(name, len(ids), finished, len(overlaps), len(ids) - finished, final, runs,
                 overlaps)
