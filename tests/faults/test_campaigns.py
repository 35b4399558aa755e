"""Fault campaigns: a task that submit() accepted is never lost, never stuck, and never runs
twice at once while its launcher is alive (at least once overall).

One campaign per fault.  Each submits a few hundred short tasks (10-50 ms, ``campaign.guarded``)
tagged with the campaign's name, injects its fault while they run, waits for every task to
end, and prints exactly one line::

    campaign=<name> submitted=N finished=N overlapping_runs=0 lost=0

``finished``: tasks whose final state is JOB_FINISHED; ``lost``: submitted - finished at the
campaign's deadline; ``overlapping_runs``: how many times a run found another run of the same
task alive (each run holds a per-task ``flock`` for its whole duration; see campaign.py).
Run with ``-s`` to see the lines.

Launchers are separate processes started with the CLI (``balsam-futures launcher``), as in a
batch job; they import ``campaign`` (beside this file) through PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import campaign  # noqa: E402
from campaign import (  # noqa: E402
    alive,
    children,
    cli,
    finished_count,
    held_by,
    histories,
    start_launcher,
    stop_all,
    tally,
    wait_final,
    wait_gone,
    wait_started,
    wait_until,
)

from balsam_futures import BalsamExecutor  # noqa: E402
from balsam_futures.backends import open_store  # noqa: E402

#: How long a campaign may take to end once its fault is over (its deadline).
DEADLINE_S = 60.0
#: How long the processes of a dead launcher may outlive it (parent-death signal; slack for a
#: loaded machine).
GONE_WITHIN_S = 3.0
#: Lease of the launchers in campaigns whose fault is an outage of the store: longer than the
#: outage, so that the outage alone does not fence them.
OUTAGE_LEASE_S = 10.0


@pytest.fixture
def dirs(tmp_path):
    """(site, lockdir, logdir) of a campaign on the embedded SQLite default."""
    lockdir = tmp_path / "locks"
    lockdir.mkdir()
    return tmp_path / "site", lockdir, tmp_path / "logs"


def runs_by_launcher(store) -> Counter:
    """Runs that ended (any way) per launcher id, from the execution profile."""
    return Counter(r["launcher_id"] for r in store.list_runs())


def requeue_messages(hist: dict[int, list[dict]]) -> list[tuple[int, dict]]:
    """History rows that gave a held task back (CLAIMED→READY, RUNNING→RESTART_READY)."""
    return [(i, h) for i, rows in hist.items() for h in rows
            if h["from_state"] in ("CLAIMED", "RUNNING")
            and h["to_state"] in ("READY", "RESTART_READY")]


def launcher_row(store, launcher_id: int) -> dict:
    [row] = [r for r in store.list_launchers() if r["id"] == launcher_id]
    return row


# -- (1) a launcher killed with SIGKILL -------------------------------------------------------


@pytest.mark.timeout(120)
def test_campaign_launcher_kill_9(dirs):
    name, n = "launcher_kill9", 160
    site, lockdir, logdir = dirs
    ex = BalsamExecutor(site=site, launcher=False)
    victim = survivor = None
    try:
        victim = start_launcher(site, logdir, workers=2, lease=3)
        survivor = start_launcher(site, logdir, workers=2, lease=3)
        vid = wait_started(victim)
        wait_started(survivor)
        ids = campaign.submit(ex, name, n, lockdir)
        store = ex.store
        # Mid-campaign: the victim has finished some tasks and holds others.
        wait_until("the victim to be busy", lambda: runs_by_launcher(store)[vid] >= 10
                   and held_by(store, ids, vid), timeout=60, interval=0.005)
        workers = children(victim.pid)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.time()
        held = held_by(store, ids, vid)  # what it held when it died
        done_before = finished_count(store, ids)
        assert done_before < n, "the campaign was over before the fault"
        left = wait_gone(workers, GONE_WITHIN_S)
        assert not left, f"workers {left} of the killed launcher outlived it"
        wait_final(store, ids, DEADLINE_S, launchers=[survivor])
        result = tally(name, store, ids, lockdir)
        hist = histories(store, ids)
        requeued = [(i, h) for i, h in requeue_messages(hist) if h["at"] >= killed_at]
        print(f"\n  detail: launcher {vid} killed holding {len(held)} task(s) with "
              f"{done_before}/{n} finished; {len(requeued)} requeued by the sweep; "
              f"runs per launcher {dict(runs_by_launcher(store))}")
        result.check()
        assert {i for i, _ in requeued} >= set(held), \
            "every task the killed launcher held must have been given back"
        assert all("lease expired" in h["message"] for _, h in requeued), requeued
        assert launcher_row(store, vid)["state"] == "EXPIRED"
        assert survivor.proc.poll() is None, "the survivor should still be running"
    finally:
        stop_all([victim, survivor])
        ex.shutdown(wait=False)


# -- (2) a launcher stopped (SIGSTOP) past its lease, then continued --------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("moment", ["between_round_trips", "holding_the_write_lock"])
def test_campaign_launcher_sigstop_past_lease(dirs, moment):
    """SIGSTOP at a moment the launcher does not hold the site's write lock (the flock its
    store takes around every write transaction), or at one it does.  A stop at a random
    moment is one or the other; each is chosen here so that the outcome does not depend on
    chance."""
    name, n, lease, stopped_s = f"launcher_sigstop_{moment}", 300, 2.0, 4.5
    site, lockdir, logdir = dirs
    ex = BalsamExecutor(site=site, launcher=False)
    victim = peer = None
    try:
        victim = start_launcher(site, logdir, workers=2, lease=lease)
        peer = start_launcher(site, logdir, workers=1, lease=lease)
        vid = wait_started(victim)
        wait_started(peer)
        ids = campaign.submit(ex, name, n, lockdir)
        store = ex.store
        wait_until("the victim to be busy", lambda: runs_by_launcher(store)[vid] >= 10
                   and held_by(store, ids, vid), timeout=60, interval=0.005)
        workers = children(victim.pid)
        campaign.stop_process(victim.pid, holding=moment == "holding_the_write_lock",
                              lock=site / "balsam.db.writelock")
        t_stop = time.time()  # after the stop: what it wrote before is older
        stop_event = store.latest_event_id()  # history committed before the stop
        held = held_by(store, ids, vid)
        time.sleep(stopped_s)
        t_cont = time.time()
        victim.proc.send_signal(signal.SIGCONT)
        done_at_cont = finished_count(store, ids)
        # A moment for it to find itself fenced and go by itself; then SIGKILL anyway.
        try:
            victim.proc.wait(timeout=1.5)
            exited_by_itself = True
        except subprocess.TimeoutExpired:
            exited_by_itself = False
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
        left = wait_gone(workers, GONE_WITHIN_S)
        wait_final(store, ids, DEADLINE_S, launchers=[peer])
        result = tally(name, store, ids, lockdir)
        hist = histories(store, ids)
        swept = [(i, h) for i, h in requeue_messages(hist) if t_stop <= h["at"] <= t_cont]
        # Held the lock, it was stopped inside a transaction that commits at SIGCONT: that
        # one's rows come after the stop's history id but were written (``at``) before it.
        in_flight_ok = moment == "holding_the_write_lock"
        late_claims = [(i, h) for i, rows in hist.items() for h in rows
                       if h["message"] == f"claimed by launcher {vid}"
                       and (h["at"] > t_stop or (h["id"] > stop_event and not in_flight_ok))]
        print(f"\n  detail: launcher {vid} stopped {stopped_s} s (lease {lease} s) holding "
              f"{len(held)} task(s); {len(swept)} given back while it was stopped; "
              f"{n - done_at_cont} unfinished at SIGCONT; exited by itself: "
              f"{exited_by_itself} (rc {victim.proc.returncode}); its row "
              f"{launcher_row(store, vid)['state']}; runs per launcher "
              f"{dict(runs_by_launcher(store))}; peer alive: {peer.proc.poll() is None}")
        result.check()
        assert peer.proc.poll() is None, "the peer should still be running"
        assert exited_by_itself, "woken up fenced, the launcher should have exited by itself"
        if moment == "holding_the_write_lock":
            # Nobody can write while it holds SQLite's lock, so nothing is swept meanwhile;
            # the peer, blocked as long, must not be judged dead for it (it is alive above),
            # and the stopped launcher, silent past its lease, fences itself when it wakes.
            given_back = {i for i, h in requeue_messages(hist) if h["at"] >= t_cont}
            assert not swept, f"nothing can be swept while the store is locked: {swept[:3]}"
            # Its transaction under way at SIGSTOP commits at SIGCONT (finishing and
            # claiming some), so what it holds then is given back when it fences itself.
            assert given_back, "the tasks it held when it woke must be given back"
        else:
            assert swept, "the peer should have swept the stopped launcher's tasks meanwhile"
            assert {i for i, _ in swept} >= set(held), "every task it held must be given back"
        assert done_at_cont < n, "work should remain after SIGCONT (else nothing to claim)"
        assert launcher_row(store, vid)["state"] == "EXPIRED"
        assert not late_claims, f"the fenced launcher claimed after SIGSTOP: {late_claims[:5]}"
        assert not left, f"workers {left} of the fenced launcher outlived it"
    finally:
        stop_all([victim, peer])
        ex.shutdown(wait=False)


# -- (3) the master killed with SIGKILL, a new one attaches ----------------------------------


MASTER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import campaign
    from balsam_futures import BalsamExecutor
    ex = BalsamExecutor(max_workers=2, site={site!r})
    run = ex.options(tags={{"campaign": {name!r}}})
    futs = [run.submit(campaign.guarded, key, campaign.duration(i), {lockdir!r})
            for i, key in enumerate(campaign.keys({name!r}, {n}))]
    ex.flush()
    print("submitted", flush=True)
    for f in futs:
        f.result()
        print("result", flush=True)
""")


@pytest.mark.timeout(120)
def test_campaign_master_kill_9_then_attach(dirs):
    name, n = "master_kill9", 150
    site, lockdir, _ = dirs
    master = subprocess.Popen(
        [sys.executable, "-c", MASTER.format(here=str(HERE), site=str(site), name=name, n=n,
                                             lockdir=str(lockdir))],
        stdout=subprocess.PIPE, text=True, env=campaign.env())
    own = []
    try:
        assert master.stdout.readline().strip() == "submitted"
        for _ in range(20):
            assert master.stdout.readline().strip() == "result"
        own = children(master.pid)  # its launcher
        own_workers = [w for pid in own for w in children(pid)]
        master.kill()
        master.wait()
        # Its launcher sees the control pipe close, stops and gives back what it held.
        left = wait_gone(own + own_workers, 15)
        assert not left, f"processes {left} of the killed master's launcher outlived it"
        with BalsamExecutor(max_workers=2, site=site) as ex:
            futs = ex.attach(tags={"campaign": name})
            results = sorted(f.result(timeout=DEADLINE_S) for f in futs)
            ids = [f.task_id for f in futs]
            result = tally(name, ex.store, ids, lockdir)
        print(f"\n  detail: attached {len(futs)} task(s); runs started "
              f"{sum(result.runs.values())}")
        result.check()
        assert len(futs) == n
        assert results == sorted(campaign.keys(name, n))
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        for pid in own:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- (4) the site's PostgreSQL server stopped and started with the CLI -----------------------


def db(*args) -> subprocess.CompletedProcess:
    return subprocess.run(cli("db", *args), capture_output=True, text=True, timeout=60)


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_campaign_postgres_restart_through_the_cli(pg_site, tmp_path):
    name, n, down_s = "postgres_restart", 200, 2.0
    lockdir = tmp_path / "locks"
    lockdir.mkdir()
    started = db("start", "--site", pg_site, *(["--run-as", "postgres"] if os.geteuid() == 0
                                               else []))
    assert started.returncode == 0, started.stdout + started.stderr
    url = started.stdout.strip().splitlines()[-1]
    ex = BalsamExecutor(site=pg_site, db_url=url, launcher=False)
    launcher = None
    store = open_store(url)
    try:
        launcher = start_launcher(pg_site, tmp_path / "logs", db_url=url, workers=2,
                                  lease=OUTAGE_LEASE_S)
        wait_started(launcher)
        ids = campaign.submit(ex, name, n, lockdir)
        wait_until("the campaign to get going", lambda: finished_count(store, ids) >= 20,
                   timeout=60)
        done_at_stop = finished_count(store, ids)
        stopped = db("stop", "--site", pg_site)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        down_at = time.monotonic()
        assert db("status", "--site", pg_site).returncode == 3, "the server should be down"
        time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
        again = db("start", "--site", pg_site)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.strip().splitlines()[-1] == url, "the server moved"
        wait_final(store, ids, DEADLINE_S, launchers=[launcher])
        result = tally(name, store, ids, lockdir)
        outage_lines = [ln for ln in launcher.text().splitlines() if "unavailable" in ln]
        print(f"\n  detail: server down {down_s} s with {n - done_at_stop} task(s) "
              f"unfinished; the launcher logged {len(outage_lines)} outage warning(s)")
        result.check()
        assert done_at_stop < n, "the campaign was over before the outage"
        assert outage_lines, "the launcher never saw the outage: was the server really down?"
        assert launcher.proc.poll() is None, "the launcher should have survived the outage"
    finally:
        stop_all([launcher])
        store.close()
        ex.shutdown(wait=False)


def get_going(ex, site, logs, name, n, lockdir, launchers, db_url=None) -> list[int]:
    """Start two launchers with the outage lease (into ``launchers``, which the caller stops
    whatever happens), submit the campaign and wait until it is under way; its task ids."""
    extra = {} if db_url is None else {"db_url": db_url}
    launchers += [start_launcher(site, logs, workers=2, lease=OUTAGE_LEASE_S, **extra)
                  for _ in range(2)]
    for launcher in launchers:
        wait_started(launcher)
    ids = campaign.submit(ex, name, n, lockdir)
    wait_until("the campaign to get going", lambda: finished_count(ex.store, ids) >= 20,
               timeout=60)
    return ids


# -- (5, 6) the site on a small tmpfs: disk full, read-only -----------------------------------


def _mount(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *map(str, argv)], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A 20 MiB tmpfs for the site (root only); unmounted at the end, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    path = tmp_path / "tmpfs"
    path.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", path)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        _mount("-o", "remount,rw", path)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError:
                    break
                written += chunk
    return written


@pytest.mark.timeout(120)
def test_campaign_disk_full(tmpfs, tmp_path):
    name, n, full_s = "disk_full", 200, 2.0
    site = tmpfs / "site"
    lockdir = tmp_path / "locks"  # not on the full disk: the overlap check must keep working
    lockdir.mkdir()
    ex = BalsamExecutor(site=site, launcher=False)
    launchers = []
    filler = tmpfs / "filler"
    try:
        ids = get_going(ex, site, tmp_path / "logs", name, n, lockdir, launchers)
        store = ex.store
        try:
            written = fill(filler)
            st = os.statvfs(tmpfs)
            free = st.f_bavail * st.f_frsize
            done_full = finished_count(store, ids)
            time.sleep(full_s)
            done_full = finished_count(store, ids) - done_full
        finally:
            filler.unlink(missing_ok=True)
        wait_final(store, ids, DEADLINE_S, launchers=launchers)
        result = tally(name, store, ids, lockdir)
        full_lines = [ln for launcher in launchers for ln in launcher.text().splitlines()
                      if "full" in ln]
        print(f"\n  detail: filled {written >> 20} MiB ({free} bytes left) for {full_s} s; "
              f"{done_full} task(s) finished meanwhile; launchers logged {len(full_lines)} "
              "disk-full warning(s)")
        result.check()
        assert free == 0, "the filesystem should have been full"
        assert full_lines, "no launcher hit the full disk: the fault did not bite"
        assert all(launcher.proc.poll() is None for launcher in launchers)
    finally:
        stop_all(launchers)
        ex.shutdown(wait=False)


@pytest.mark.timeout(120)
def test_campaign_database_read_only(tmpfs, tmp_path):
    name, n, ro_s = "read_only", 200, 2.0
    site = tmpfs / "site"
    lockdir = tmp_path / "locks"
    lockdir.mkdir()
    ex = BalsamExecutor(site=site, launcher=False)
    launchers = []
    try:
        ids = get_going(ex, site, tmp_path / "logs", name, n, lockdir, launchers)
        store = ex.store
        ro = _mount("-o", "remount,ro", tmpfs)
        if ro.returncode != 0:
            pytest.skip("the kernel refuses to remount the site's filesystem read-only while "
                        "SQLite holds balsam.db and its WAL open for writing (mount: "
                        f"{' '.join(ro.stderr.split())!r}); the fault cannot be injected "
                        "this way")
        try:
            done_ro = finished_count(store, ids)
            time.sleep(ro_s)
            done_ro = finished_count(store, ids) - done_ro
        finally:
            rw = _mount("-o", "remount,rw", tmpfs)
        assert rw.returncode == 0, rw.stderr
        wait_final(store, ids, DEADLINE_S, launchers=launchers)
        result = tally(name, store, ids, lockdir)
        ro_lines = [ln for launcher in launchers for ln in launcher.text().splitlines()
                    if "readonly" in ln or "read-only" in ln]
        print(f"\n  detail: read-only for {ro_s} s; {done_ro} task(s) finished meanwhile; "
              f"launchers logged {len(ro_lines)} read-only warning(s)")
        result.check()
        assert ro_lines, "no launcher hit the read-only database: the fault did not bite"
        assert all(launcher.proc.poll() is None for launcher in launchers)
    finally:
        stop_all(launchers)
        ex.shutdown(wait=False)


def _set_read_only(pg_url: str, on: bool) -> None:
    """Make every transaction of the server read-only (or not again), sessions already open
    included: ``default_transaction_read_only`` in the server's configuration, reloaded."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")  # this session may write
            if on:
                cur.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            else:
                cur.execute("ALTER SYSTEM RESET default_transaction_read_only")
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_campaign_database_read_only_on_postgres(pg_url, tmp_path):
    """The database refuses every write for a while (as a server turned read-only for
    maintenance, or a standby not promoted yet): launchers and the master wait it out."""
    name, n, ro_s = "read_only_postgres", 200, 2.0
    site = tmp_path / "site"
    lockdir = tmp_path / "locks"
    lockdir.mkdir()
    ex = BalsamExecutor(site=site, db_url=pg_url, launcher=False)
    launchers = []
    try:
        ids = get_going(ex, site, tmp_path / "logs", name, n, lockdir, launchers,
                        db_url=pg_url)
        store = ex.store
        _set_read_only(pg_url, True)
        try:
            done_ro = finished_count(store, ids)
            time.sleep(ro_s)
            done_ro = finished_count(store, ids) - done_ro
        finally:
            _set_read_only(pg_url, False)
        wait_final(store, ids, DEADLINE_S, launchers=launchers)
        result = tally(name, store, ids, lockdir)
        ro_lines = [ln for launcher in launchers for ln in launcher.text().splitlines()
                    if "read-only" in ln]
        print(f"\n  detail: read-only for {ro_s} s; {done_ro} task(s) finished meanwhile; "
              f"launchers logged {len(ro_lines)} read-only warning(s)")
        result.check()
        assert ro_lines, "no launcher hit the read-only database: the fault did not bite"
        assert done_ro <= 4, "tasks kept finishing: were writes really refused?"
        assert all(launcher.proc.poll() is None for launcher in launchers)
    finally:
        _set_read_only(pg_url, False)
        stop_all(launchers)
        ex.shutdown(wait=False)


# -- (7) eight launchers on one PostgreSQL database ------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_campaign_eight_launchers_on_postgres(pg_url, tmp_path):
    name, n, k = "eight_launchers", 400, 8
    floor = n // k // 5  # none starved: each ran at least a fifth of its fair share
    site, lockdir = tmp_path / "site", tmp_path / "locks"
    lockdir.mkdir()
    ex = BalsamExecutor(site=site, db_url=pg_url, launcher=False)
    launchers = []
    try:
        launchers = [start_launcher(site, tmp_path / "logs", db_url=pg_url, workers=1,
                                    lease=OUTAGE_LEASE_S) for _ in range(k)]
        lids = [wait_started(launcher) for launcher in launchers]
        ids = campaign.submit(ex, name, n, lockdir)
        store = ex.store
        wait_final(store, ids, DEADLINE_S, launchers=launchers)
        result = tally(name, store, ids, lockdir)
        done = Counter(r["launcher_id"] for r in store.list_runs() if r["state"] == "RUN_DONE")
        per = [done.get(lid, 0) for lid in lids]
        print(f"\n  detail: tasks run per launcher {dict(zip(lids, per))} (floor {floor})")
        result.check()
        assert sum(per) == n, f"runs recorded {sum(per)}, tasks {n}"
        assert min(per) >= floor, f"a launcher was starved: {dict(zip(lids, per))}"
        assert not [i for i, runs in result.runs.items() if runs != 1], "a task ran twice"
    finally:
        stop_all(launchers)
        ex.shutdown(wait=False)
