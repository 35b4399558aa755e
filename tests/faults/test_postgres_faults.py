"""Fault injection on PostgreSQL: killed launchers, a killed master, a restarted server, many
launchers at once.  Each test prints what it counted and asserts that nothing was lost.

Launchers run as separate processes (``python -m balsam_futures launcher``), as they would in
batch jobs; the tasks are module-level functions of ``faultload`` (beside this file), which
launchers import through PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from balsam_futures import BalsamExecutor
from balsam_futures.backends import open_store

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import faultload  # noqa: E402

LEASE = 2.0  # seconds: short, so lost launchers are noticed quickly


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["BALSAM_FUTURES_LEASE_SECONDS"] = str(LEASE)
    env.update(extra)
    return env


def start_launcher(url, site, workers=1, idle_timeout=None):
    argv = [sys.executable, "-m", "balsam_futures", "launcher", "--db-url", url, "--site",
            str(site), "--workers", str(workers), "--lease", str(LEASE)]
    if idle_timeout is not None:
        argv += ["--idle-timeout", str(idle_timeout)]
    log = open(Path(site).parent / "launchers.log", "a")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(argv, env=_env(), stdout=log, stderr=log)


def kill_tree(proc):
    """SIGKILL a launcher and its workers (they run in sessions of their own)."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    for pid in [proc.pid, *map(int, children)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(p)


def counts(store, ids):
    """What happened to tasks ``ids`` (all when None): final states, runs per task (RUNNING
    entries in history) and the number of requeues."""
    where = "" if ids is None else f"WHERE task_id IN ({','.join(map(str, ids))})"
    twhere = where.replace("task_id", "id")
    with store.engine.connect() as conn:
        states = Counter(dict(conn.execute(text(
            f"SELECT state, count(*) FROM bf_tasks {twhere} GROUP BY state")).all()))
        runs = Counter(dict(conn.execute(text(
            f"SELECT task_id, count(*) FROM bf_history {where} "
            f"{'AND' if where else 'WHERE'} to_state = 'RUNNING' GROUP BY task_id")).all()))
        requeues = conn.execute(text(
            f"SELECT count(*) FROM bf_history {where} {'AND' if where else 'WHERE'} "
            "to_state = 'RESTART_READY'")).scalar_one()
    return states, runs, requeues


def report(name, submitted, states, runs, requeues):
    finished = states.get("JOB_FINISHED", 0)
    lost = submitted - finished
    twice = sum(1 for n in runs.values() if n > 1)
    print(f"\n[{name}] submitted={submitted} finished={finished} requeued={requeues} "
          f"ran_more_than_once={twice} lost={lost}")
    return lost


def test_launcher_killed_mid_campaign_tasks_are_requeued_and_completed(pg_url, tmp_path):
    ex = BalsamExecutor(site=tmp_path / "site", db_url=pg_url, launcher=False)
    victim = start_launcher(pg_url, tmp_path / "site", workers=2)
    futs = [ex.submit(faultload.nap, i, 0.05) for i in range(120)]
    store = open_store(pg_url)
    try:
        ids = [f.task_id for f in futs]
        # Kill it once it has finished some tasks and holds others.
        deadline = time.monotonic() + 60
        while store.count_by_state().get("JOB_FINISHED", 0) < 10:
            assert time.monotonic() < deadline, "the first launcher never got going"
            time.sleep(0.05)
        kill_tree(victim)
        survivor = start_launcher(pg_url, tmp_path / "site", workers=2)
        assert [f.result(timeout=120) for f in futs] == list(range(120))
        states, runs, requeues = counts(store, ids)
        assert report("launcher kill -9", len(ids), states, runs, requeues) == 0
        assert requeues >= 1, "the killed launcher held tasks that should have been requeued"
        expired = [h for i in ids for h in store.history(i)
                   if h["to_state"] == "RESTART_READY"]
        assert all("lease expired" in h["message"] for h in expired)
    finally:
        stop([victim, locals().get("survivor") or victim])
        store.close()
        ex.shutdown(wait=False)


MASTER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    import faultload
    from balsam_futures import BalsamExecutor
    ex = BalsamExecutor(site={site!r}, db_url={url!r}, launcher=False)
    run = ex.options(tags={{"campaign": "c1"}})
    futs = [run.submit(faultload.nap, i, 0.02) for i in range({n})]
    ex.flush()
    print("submitted", flush=True)
    for f in futs:
        f.result()
        print("result", flush=True)
""")


def test_master_killed_then_reattached_from_a_new_process(pg_url, tmp_path):
    site = tmp_path / "site"
    n = 200
    launcher = start_launcher(pg_url, site, workers=2)
    master = subprocess.Popen([sys.executable, "-c", MASTER.format(
        here=str(HERE), site=str(site), url=pg_url, n=n)], env=_env(),
        stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout.readline().strip() == "submitted"
        for _ in range(20):  # it has seen some results...
            assert master.stdout.readline().strip() == "result"
        master.kill()  # ...then dies without warning
        master.wait()
        with BalsamExecutor(site=site, db_url=pg_url, launcher=False) as ex:
            futs = ex.attach(tags={"campaign": "c1"})
            assert len(futs) == n
            assert sorted(f.result(timeout=120) for f in futs) == list(range(n))
            states, runs, requeues = counts(ex.store, [f.task_id for f in futs])
        assert report("master kill -9 + attach", n, states, runs, requeues) == 0
    finally:
        stop([launcher])
        if master.poll() is None:
            master.kill()


def test_postgres_restarted_mid_campaign(pg_server, pg_url, tmp_path):
    site = tmp_path / "site"
    launcher = start_launcher(pg_url, site, workers=2)
    ex = BalsamExecutor(site=site, db_url=pg_url, launcher=False)
    try:
        futs = [ex.submit(faultload.nap, i, 0.02) for i in range(300)]
        ids = [f.task_id for f in futs]
        store = open_store(pg_url)
        deadline = time.monotonic() + 60
        while store.count_by_state().get("JOB_FINISHED", 0) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store.close()
        pg_server.restart()  # every connection is cut; the server comes back on its port
        assert sorted(f.result(timeout=120) for f in futs) == list(range(300))
        store = open_store(pg_url)
        states, runs, requeues = counts(store, ids)
        store.close()
        assert report("postgres restart", len(ids), states, runs, requeues) == 0
        assert launcher.poll() is None, "the launcher should have survived the outage"
    finally:
        stop([launcher])
        ex.shutdown(wait=False)


def test_eight_launchers_ten_thousand_tasks_none_run_twice(pg_url, tmp_path):
    site = tmp_path / "site"
    n = 10_000
    ex = BalsamExecutor(site=site, db_url=pg_url, launcher=False)
    launchers = [start_launcher(pg_url, site, workers=1) for _ in range(8)]
    try:
        assert list(ex.map(faultload.identity, range(n))) == list(range(n))
        with ex.store.engine.connect() as conn:
            per_launcher = dict(conn.execute(text(
                "SELECT launcher_id, count(*) FROM bf_tasks GROUP BY launcher_id")).all())
        states, runs, requeues = counts(ex.store, None)
        assert report("8 launchers", n, states, runs, requeues) == 0
        print(f"[8 launchers] tasks per launcher: {sorted(per_launcher.values())}")
        assert not [t for t, k in runs.items() if k > 1], "a task ran twice"
        assert len(runs) == n
        assert len(per_launcher) >= 2, "expected the work to spread over launchers"
    finally:
        stop(launchers)
        ex.shutdown(wait=False)


def test_submissions_during_an_outage_are_kept_or_refused_never_lost(pg_server, pg_url,
                                                                      tmp_path):
    from balsam_futures import StoreUnavailable

    site = tmp_path / "site"
    launcher = start_launcher(pg_url, site, workers=2)
    ex = BalsamExecutor(site=site, db_url=pg_url, launcher=False)
    try:
        before = [ex.submit(faultload.identity, i) for i in range(10)]
        assert [f.result(timeout=60) for f in before] == list(range(10))
        pg_server.stop(mode="fast")
        kept, refused = [], 0
        deadline = time.monotonic() + 30
        # The first submissions are queued; once the writer has failed, new ones raise.
        while time.monotonic() < deadline:
            try:
                kept.append(ex.submit(faultload.identity, 100 + len(kept)))
            except StoreUnavailable as exc:
                refused += 1
                assert "unavailable" in str(exc)
                break
            time.sleep(0.01)
        assert refused == 1, "submit() never reported the outage"
        assert not ex.flush(timeout=0.5), "nothing can be stored while the server is down"
        pg_server.restart()
        assert ex.flush(timeout=60)
        assert [f.result(timeout=60) for f in kept] == [100 + i for i in range(len(kept))]
        print(f"\n[executor outage] queued={len(kept)} refused={refused} "
              f"finished={len(kept)} lost=0")
    finally:
        if not pg_server.running():
            pg_server.restart()  # later tests share the server
        stop([launcher])
        ex.shutdown(wait=False)
