"""The executor's own launcher forked from the master where that is safe (launcher/fork.py),
and a fresh interpreter everywhere else.

Each case runs in a script of its own: whether a fork is safe depends on the whole process
(its threads, its open files), which a test runner's process does not control.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

_PRELUDE = """
import json, logging, os, sys, threading
from balsam_futures import BalsamExecutor

def pid():
    return os.getpid()

def fds(launcher_pid):
    return {os.readlink(f"/proc/{launcher_pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{launcher_pid}/fd")}

def report(ex, **extra):
    launcher = ex._launcher
    out = {"spawned_because": launcher.spawned_because, "launcher_pid": launcher.pid,
           "worker_pid": ex.submit(pid).result(timeout=60), "master_pid": os.getpid(),
           "launcher_parent": int(open(f"/proc/{launcher.pid}/stat").read()
                                  .rsplit(")", 1)[1].split()[1]),
           "launcher_name": open(f"/proc/{launcher.pid}/comm").read().strip(), **extra}
    print("REPORT " + json.dumps(out), flush=True)
"""


def _run(tmp_path, body: str, env: dict[str, str] | None = None) -> dict:
    script = tmp_path / "master.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    from balsam_futures.launcher.child import worker_python_path

    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=100, env={**os.environ, "PYTHONPATH": worker_python_path(),
                          "BALSAM_FUTURES_SITE": str(tmp_path / "site"), **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, proc.stdout + proc.stderr
    return {**json.loads(lines[-1][len("REPORT "):]), "stdout": proc.stdout,
            "stderr": proc.stderr}


def test_a_single_threaded_master_forks_its_launcher(tmp_path):
    out = _run(tmp_path, """
        with BalsamExecutor(max_workers=1) as ex:
            report(ex)
    """)
    assert out["spawned_because"] is None
    assert out["launcher_parent"] == out["master_pid"]
    assert out["launcher_name"] == "bf-launcher"  # in ps and top; its argv is the master's
    assert out["worker_pid"] not in (out["master_pid"], out["launcher_pid"])


def test_the_forked_launcher_holds_none_of_the_masters_files(tmp_path):
    # A pipe open in the master when the executor starts: the launcher must not keep a copy
    # (else the master's own child, reading it, would never see the end of its input).
    out = _run(tmp_path, """
        r, w = os.pipe()
        log = open("master.log", "w")
        with BalsamExecutor(max_workers=1) as ex:
            held = fds(ex._launcher.pid)
            pipes = {os.readlink(f"/proc/self/fd/{fd}") for fd in (r, w)}
            report(ex, shared=sorted(held & (pipes | {os.path.realpath("master.log")})))
    """)
    assert out["spawned_because"] is None
    assert out["shared"] == []


def test_the_forked_launcher_logs_to_its_file_not_to_the_masters_handlers(tmp_path):
    out = _run(tmp_path, """
        logging.basicConfig(filename="master.log", level=logging.DEBUG)
        logging.getLogger("balsam_futures").setLevel(logging.CRITICAL)
        with BalsamExecutor(max_workers=1) as ex:
            report(ex, log=str(ex._launcher.log_file))
    """)
    assert out["spawned_because"] is None
    launcher_log = Path(out["log"]).read_text()
    assert "launcher 1 started" in launcher_log
    assert "launcher" not in (tmp_path / "master.log").read_text()


def test_a_master_with_threads_spawns_a_fresh_launcher(tmp_path):
    out = _run(tmp_path, """
        stop = threading.Event()
        helper = threading.Thread(target=stop.wait)
        helper.start()
        with BalsamExecutor(max_workers=1) as ex:
            report(ex)
        stop.set()
    """)
    assert "threads" in out["spawned_because"]
    assert out["launcher_parent"] == out["master_pid"]


def test_an_open_store_file_spawns_a_fresh_launcher(tmp_path):
    # A connection of the master's to the same SQLite file: a copy of SQLite's lock state
    # in a fork would be wrong, so no fork.
    out = _run(tmp_path, """
        from balsam_futures.backends import open_store
        with BalsamExecutor(max_workers=1) as first:
            first.submit(pid).result(timeout=60)
        other = open_store(f"sqlite:///{first.store.path}")
        other.latest_event_id()
        with BalsamExecutor(max_workers=1) as ex:
            report(ex)
    """)
    assert "is open in this process" in out["spawned_because"]


@pytest.mark.parametrize("how", ["mp_context", "setting"])
def test_a_spawn_context_or_the_setting_spawns_a_fresh_launcher(tmp_path, how):
    body = """
        import multiprocessing
        with BalsamExecutor(max_workers=1,
                            mp_context=multiprocessing.get_context("spawn")) as ex:
            report(ex)
    """ if how == "mp_context" else """
        with BalsamExecutor(max_workers=1) as ex:
            report(ex)
    """
    out = _run(tmp_path, body, env={"BALSAM_FUTURES_LAUNCHER_START": "spawn"}
               if how == "setting" else None)
    assert out["spawned_because"] in ("mp_context asks for 'spawn'",
                                      "BALSAM_FUTURES_LAUNCHER_START=spawn")


def test_a_fork_context_still_forks(tmp_path):
    out = _run(tmp_path, """
        import multiprocessing
        with BalsamExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as ex:
            report(ex)
    """)
    assert out["spawned_because"] is None


def test_a_forked_launcher_runs_none_of_the_masters_exit_hooks(tmp_path):
    # The master's atexit hook would print twice if the launcher, a copy, ran it too.
    out = _run(tmp_path, """
        import atexit
        atexit.register(print, "EXIT HOOK", flush=True)
        with BalsamExecutor(max_workers=1) as ex:
            report(ex)
    """)
    assert out["spawned_because"] is None
    assert out["stdout"].count("EXIT HOOK") == 1


@contextlib.contextmanager
def _master_to_kill(tmp_path, body: str):
    """Start ``body`` as a master that reports (``report()``) and then waits; yields (its
    process, the report) and kills it at the end whatever happened."""
    script = tmp_path / "master.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    from balsam_futures.launcher.child import worker_python_path

    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": worker_python_path(),
             "BALSAM_FUTURES_SITE": str(tmp_path / "site")})
    try:
        line = proc.stdout.readline()
        assert line.startswith("REPORT "), line
        yield proc, json.loads(line[len("REPORT "):])
    finally:
        if proc.poll() is None:
            proc.kill()


def _kill_and_see_exit(proc, pids: list[int], why: str) -> None:
    """Kill the master ``proc``; each of ``pids`` must exit within 30 s (they are not this
    test's children: pidfds are readable once they have)."""
    pidfds = [os.pidfd_open(pid) for pid in pids]
    proc.kill()
    proc.wait(timeout=30)
    for fd in pidfds:
        ready, _, _ = select.select([fd], [], [], 30)
        os.close(fd)
        assert ready, why


def test_a_killed_master_stops_its_forked_launcher_and_workers(tmp_path):
    with _master_to_kill(tmp_path, """
        import time
        ex = BalsamExecutor(max_workers=1)
        report(ex)
        time.sleep(600)
    """) as (proc, out):
        assert out["spawned_because"] is None
        _kill_and_see_exit(proc, [out["launcher_pid"], out["worker_pid"]],
                           "the launcher or its worker outlived the master")


def test_a_stopped_launchers_descriptor_numbers_are_left_to_their_new_files(tmp_path):
    # After shutdown the launcher's pipe numbers are free, and the next pipe takes them.  A
    # fork must not point them at /dev/null as if they were still the old launcher's: not in
    # a plain child (its pipe read end-of-input at once), nor in the next executor's forked
    # launcher (its control pipe became /dev/null, which epoll refuses: it died at start).
    out = _run(tmp_path, """
        ex = BalsamExecutor(max_workers=1)
        ex.submit(pid).result(timeout=60)
        old = ex._launcher  # kept alive, as a user's reference to the executor keeps it
        numbers = {old._control_fd, old.news_fd}
        ex.shutdown()
        mine = []
        while not numbers <= set(mine) and len(mine) < 64:
            mine += os.pipe()  # new pipes, until they hold the old numbers
        links = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in mine}
        child = os.fork()
        if child == 0:  # exits 3 if its copies of the pipes are still those pipes
            same = all(os.readlink(f"/proc/self/fd/{fd}") == link for fd, link in links.items())
            os._exit(3 if same else 9)
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        for fd in mine:
            os.close(fd)
        with BalsamExecutor(max_workers=1) as again:
            report(again, reused=sorted(numbers & set(mine)), code=code)
    """)
    assert len(out["reused"]) == 2  # the test's precondition: new pipes took the old numbers
    assert out["code"] == 3
    assert out["spawned_because"] is None and out["worker_pid"] > 0


def test_a_forked_copy_cannot_submit_and_its_shutdown_stops_nothing(tmp_path):
    # In a copy of the master the executor's threads and launcher are not there: a submit
    # would wait forever.  It is refused, naming both processes; shutdown() leaves the
    # master's executor running.
    out = _run(tmp_path, """
        import time
        ex = BalsamExecutor(max_workers=1)
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                ex.submit(pid)
                os.write(w, b"accepted")
            except RuntimeError as exc:
                os.write(w, str(exc).encode())
            t0 = time.monotonic()
            ex.shutdown()
            os.write(w, f"|{time.monotonic() - t0:.3f}".encode())
            os._exit(0)
        os.close(w)
        said = b""
        while chunk := os.read(r, 4096):
            said += chunk
        os.waitpid(child, 0)
        refusal, took = said.decode().rsplit("|", 1)
        report(ex, refusal=refusal, took=float(took), child=child)
        ex.shutdown()
    """)
    assert f"process {out['child']} is a fork of it" in out["refusal"], out["refusal"]
    assert f"belongs to process {out['master_pid']}" in out["refusal"]
    assert out["took"] < 1
    assert out["worker_pid"] > 0  # report() ran a task in the master after the child's end


def test_a_killed_master_stops_its_launcher_while_a_process_it_forked_lives(tmp_path):
    forked = None
    try:
        with _master_to_kill(tmp_path, """
            import time
            ex = BalsamExecutor(max_workers=1)
            child = os.fork()
            if child == 0:  # a copy of the master that outlives it
                time.sleep(120)
                os._exit(0)
            report(ex, forked=child)
            time.sleep(600)
        """) as (proc, out):
            forked = out["forked"]
            _kill_and_see_exit(proc, [out["launcher_pid"]],
                               "the launcher outlived the master while a copy of the master "
                               "lived")
    finally:
        if forked is not None:
            try:
                os.kill(forked, 9)
            except ProcessLookupError:
                pass


def test_a_master_with_mpi_loaded_spawns_a_fresh_launcher(tmp_path):
    pytest.importorskip("mpi4py")
    out = _run(tmp_path, """
        from mpi4py import MPI
        assert MPI.Is_initialized()
        with BalsamExecutor(max_workers=1) as ex:
            report(ex)
    """)
    assert out["spawned_because"].endswith("is loaded"), out["spawned_because"]


@pytest.mark.postgres
def test_a_postgres_master_forks_and_keeps_its_connections(tmp_path, pg_url):
    # The copy holds the master's server connections too: it must end none of them in a way
    # the server sees (a goodbye message), so a connection opened before the fork still
    # answers after the launcher has exited.
    out = _run(tmp_path, f"""
        from balsam_futures.backends import open_store
        before = open_store({pg_url!r})

        def backend():
            cur = before._dbapi_connection().cursor()
            cur.execute("SELECT pg_backend_pid()")
            return cur.fetchone()[0]

        session = backend()  # this connection is open across the fork
        with BalsamExecutor(max_workers=1, db_url={pg_url!r}) as ex:
            ex.submit(pid).result(timeout=60)
            forked = ex._launcher.spawned_because is None
        print("REPORT " + json.dumps({{"forked": forked, "states": before.count_by_state(),
                                       "same_session": backend() == session,
                                       "exit": ex._launcher.proc.poll()}}))
    """)
    assert out["forked"]
    assert out["same_session"]  # not ended by the copy and silently reopened
    assert out["exit"] == 0
    assert out["states"] == {"JOB_FINISHED": 1}
