"""A launcher killed outright (kill -9) takes its workers, and what they run, along.

Its tasks are requeued and run again elsewhere, so a worker left running would run its task
beside the requeued copy, in the same working directory.  Each test starts a real launcher
(``python -m balsam_futures launcher``), waits until its tasks run, notes every process
below it (workers, the commands they started, MPI launchers, their proxies and ranks), kills
it with SIGKILL and asserts that all of them are gone within about a second.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from processes import alive, wait_for_file

from balsam_futures import BalsamExecutor, Resources, ShellApp
from balsam_futures.launcher.workers.pool import _WORKER_CODE
from balsam_futures.serialization import dump_call, dump_callable

pytestmark = pytest.mark.timeout(90)

#: How long the processes of a killed launcher may outlive it: workers stop at once, MPI
#: launchers get worker.ORPHAN_GRACE_S (0.5 s) to stop their ranks; the rest is slack for a
#: loaded test machine.
GONE_WITHIN_S = 2.0


def python_task(started, child_pid_file):
    child = subprocess.Popen(["sleep", "60"])  # the task's own child, in the worker's group
    Path(child_pid_file).write_text(str(child.pid))
    Path(started).touch()
    time.sleep(60)


def rank_task(started_dir):
    from mpi4py import MPI

    Path(started_dir, str(MPI.COMM_WORLD.Get_rank())).write_text(str(os.getpid()))
    time.sleep(60)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process of this machine."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def start_launcher(site, *args):
    from balsam_futures.launcher.child import worker_python_path

    # The tasks are functions of this module: the workers import it through PYTHONPATH.
    with open(Path(site).parent / "launcher.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site), *args],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": worker_python_path()})


def stray(pids, within: float) -> set[int]:
    """Those of ``pids`` still alive after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def kill_and_check(launcher, expected, before_kill=None):
    """SIGKILL the launcher; assert that every process below it (at least ``expected``) is
    gone within GONE_WITHIN_S.  Survivors are killed, so that a failure leaves none."""
    below = descendants(launcher.pid)
    assert set(expected) <= below, "the tasks do not run below the launcher"
    if before_kill is not None:
        before_kill(below)
    start = time.monotonic()
    launcher.kill()
    launcher.wait()
    left = stray(below, GONE_WITHIN_S)
    print(f"\n{len(below)} process(es) below the launcher; gone in "
          f"{time.monotonic() - start:.2f} s")
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "outlived the launcher: " + "; ".join(
        f"{p} {command_of(p)}" for p in sorted(left))


@pytest.fixture
def executor(tmp_path):
    ex = BalsamExecutor(site=tmp_path / "site", launcher=False)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


def test_a_killed_launcher_takes_its_workers_and_what_they_run_along(executor, tmp_path):
    started, child_pid = tmp_path / "started", tmp_path / "child.pid"
    executor.submit(python_task, str(started), str(child_pid))
    shell = ShellApp("sh -c {script}", name="sleeper")
    executor.submit(shell, script=f"sleep 60 | cat & touch {tmp_path / 'shell'}; wait")
    executor.submit(ShellApp("sleep 60"))
    executor.flush()
    launcher = start_launcher(tmp_path / "site", "-n", "4")  # one idle worker, too
    try:
        wait_for_file(started, timeout=60)
        wait_for_file(tmp_path / "shell", timeout=60)
        deadline = time.monotonic() + 30
        while sum(command_of(p) == "sleep 60" for p in descendants(launcher.pid)) < 3:
            assert time.monotonic() < deadline, "the sleeps never started"
            time.sleep(0.02)
        kill_and_check(launcher, {int(child_pid.read_text())})
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_a_worker_stops_mid_task_when_its_socket_closes(tmp_path):
    """This test plays the launcher, alive, and closes its end of the socket: no parent-death
    signal, only the worker's watcher thread can see it while the task runs."""
    from balsam_futures.launcher.child import worker_python_path

    head, end = socket.socketpair()
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER_CODE, str(end.fileno()), str(os.getpid())],
        pass_fds=(end.fileno(),), start_new_session=True, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": worker_python_path()})
    end.close()
    conn = Connection(head.detach())
    started, child_pid = tmp_path / "started", tmp_path / "child.pid"
    try:
        conn.send_bytes(pickle.dumps(("init", 1, None)))
        payload = dump_call(dump_callable(python_task), (str(started), str(child_pid)), {})
        conn.send_bytes(pickle.dumps((1, payload, {"name": "t", "tags": {}})))
        wait_for_file(started, timeout=30)
        child = int(child_pid.read_text())
        conn.close()
        assert worker.wait(timeout=GONE_WITHIN_S) == -signal.SIGKILL  # its own group kill
        assert not stray({child}, GONE_WITHIN_S), "the task's child outlived its worker"
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)  # its group: what is left of it, if anything
        except ProcessLookupError:
            pass
        worker.wait()


def test_commands_die_with_their_worker_when_it_dies_alone(executor, tmp_path):
    """A worker killed outright (the OOM killer, say): its launcher sees it die and kills its
    process group, the command it started included (a plain command has no parent-death
    signal of its own: see run_child)."""
    executor.submit(ShellApp("sleep 60"))
    executor.flush()
    launcher = start_launcher(tmp_path / "site", "-n", "1")
    try:
        deadline = time.monotonic() + 60
        while not (sleeps := [p for p in descendants(launcher.pid)
                              if command_of(p) == "sleep 60"]):
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.02)
        below = descendants(launcher.pid)
        for pid in below - set(sleeps):
            if command_of(pid) != "sleep 60":
                os.kill(pid, signal.SIGKILL)  # the worker (and any helper of its task)
        left = stray(set(sleeps), GONE_WITHIN_S)
        assert not left, "outlived its worker: " + "; ".join(map(str, sorted(left)))
        assert launcher.poll() is None, "the launcher should carry on"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


@pytest.mark.mpi
def test_a_killed_launcher_takes_its_mpi_runs_along(executor, tmp_path):
    pytest.importorskip("mpi4py", reason="the ranks of a Python MPI task need mpi4py")
    if not os.access(os.path.join(os.path.dirname(sys.executable), "mpiexec"), os.X_OK):
        pytest.skip("no mpiexec beside the interpreter (pip install mpich)")
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    on_two = executor.options(resources=Resources(ranks_per_node=2))
    on_two.submit(rank_task, str(ranks))
    on_two.submit(ShellApp("sleep 60", name="mpi-sleep"))
    executor.flush()
    launcher = start_launcher(tmp_path / "site", "-n", "2", "--nodes", "1",
                              "--cores-per-node", "4")
    try:
        for rank in ("0", "1"):
            wait_for_file(ranks / rank, timeout=60)
        deadline = time.monotonic() + 30
        while sum(command_of(p) == "sleep 60" for p in descendants(launcher.pid)) < 2:
            assert time.monotonic() < deadline, "the MPI shell task's ranks never started"
            time.sleep(0.02)
        rank_pids = {int((ranks / r).read_text()) for r in ("0", "1")}
        kill_and_check(launcher, rank_pids)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


@pytest.mark.mpi
def test_a_killed_agent_takes_its_workers_and_what_they_run_along(executor, tmp_path):
    """An agent (``--agents``: one per other node, started through mpiexec) killed outright:
    its workers die with it as a head's die with the head."""
    pytest.importorskip("mpi4py", reason="agents talk to their head over mpi4py")
    if not os.access(os.path.join(os.path.dirname(sys.executable), "mpiexec"), os.X_OK):
        pytest.skip("no mpiexec beside the interpreter (pip install mpich)")
    for _ in range(2):  # one on the head's node, one on the agent's
        executor.submit(ShellApp("sleep 60"))
    executor.flush()
    head = start_launcher(tmp_path / "site", "--nodes", "2", "--cores-per-node", "1",
                          "--gpus-per-node", "0", "--agents")
    try:
        deadline = time.monotonic() + 60
        while sum(command_of(p) == "sleep 60" for p in descendants(head.pid)) < 2:
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.02)
        agent = next(p for p in descendants(head.pid)
                     if command_of(p).endswith("-m balsam_futures.launcher.agents.node"))
        kill_and_check(_Process(agent), set())
    finally:
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


class _Process:
    """Enough of a Popen for kill_and_check: a process this test did not start."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> None:
        while alive(self.pid):
            time.sleep(0.01)
