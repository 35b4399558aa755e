"""The control plane at supercomputer scale, proven by simulation: one table, all measured.

    python benchmarks/scale.py                      # full size (long: see benchmarks/README.md)
    python benchmarks/scale.py --scale 0.01         # 1/100 of every count (nodes and tasks)
    python benchmarks/scale.py --scale 0.01 --task-seconds 0.5   # and shorter runs (a test)

Launchers run with ``--simulate`` (balsam_futures/launcher/simulate.py): a run starts no
process and lasts the ``sim_seconds`` its task carries; claims, placement on the virtual
nodes, outcome writes, history and ``bf_runs`` rows and the master's futures are all real.
``--task-seconds`` replaces the runs' durations (10 s on PostgreSQL, 5 s on SQLite): the
table prints the duration used, and every figure is measured on the real clock with it.

Sections (``--scale`` multiplies nodes and tasks; launchers stay 8):

- placement: ``NodePool.place`` + ``release`` per one-GPU task on a full pool, 512 and 4,096
  nodes x 4 GPUs (never scaled: it is cheap);
- postgres: 8 launchers x 512 nodes x 4 GPUs on the site's own PostgreSQL (``db start``),
  200,000 one-GPU tasks, submitted by one master with ``ex.map`` and waited on;
- mixed: the same 8 launchers, 40,000 one-GPU tasks (1-3 x the run seconds) among 1,600
  MPI tasks of 1 to 64 whole nodes (2-4 x), submitted one by one, waited on with
  ``as_completed``;
- sqlite: 1 launcher x 512 nodes x 4 GPUs on the embedded store, 100,000 tasks;
- master: ``map`` of 1,000,000 tasks with ``launcher=False`` in a child process: store rate
  and that process's peak RSS;
- cli: ``ls --by-states``, ``ls --state FAILED --limit 50``, ``ls --history --limit 50``,
  ``show ID`` and ``stats`` on as many rows as the master's (its SQLite store, and a
  PostgreSQL database filled the same way), and ``EXPLAIN`` of the claim's and the watcher's
  queries on those PostgreSQL rows.

For each campaign: starts/s (whole campaign, and sustained: the middle 80 % of the starts),
GPU utilization from first start to last end and in the steady window (first start + one
task duration to last end - one task duration), p50/p95 READY->RUNNING wait (from the
history rows), each launcher's share of the runs, the master's peak RSS; on PostgreSQL also
the server's CPU seconds (postmaster and its backends, from /proc), transactions per task
(``pg_stat_database``) and WAL bytes per task (``pg_current_wal_lsn()`` before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from balsam_futures import BalsamExecutor, Resources  # noqa: E402
from balsam_futures.launcher.nodes import NodeSpec  # noqa: E402
from balsam_futures.launcher.packing import NodePool  # noqa: E402

LAUNCHERS = 8
NODES, GPUS_PER_NODE, CORES_PER_NODE = 512, 4, 8
PG_TASKS, SQLITE_TASKS, MASTER_TASKS = 200_000, 100_000, 1_000_000
#: The mixed campaign: one-GPU tasks and MPI tasks of 1 to 64 nodes on the 8 launchers.
MIXED_GPU_TASKS, MIXED_MPI_TASKS = 40_000, 1_600


# -- placement ---------------------------------------------------------------------------------

def placement_us(nodes: int, decisions: int = 20_000, seed: int = 1, repeat: int = 3
                 ) -> float:
    """Microseconds per placed one-GPU task on a full pool of ``nodes`` x 4 GPUs: each
    decision releases a random run and places the next (the launcher's steady state); the
    best of ``repeat`` passes (other processes on a shared machine only add time)."""
    return min(_placement_pass(nodes, decisions, seed) for _ in range(repeat))


def _placement_pass(nodes: int, decisions: int, seed: int) -> float:
    pool = NodePool([NodeSpec(f"n{i}", CORES_PER_NODE, tuple(map(str, range(GPUS_PER_NODE))))
                     for i in range(nodes)])
    one = Resources(gpus_per_rank=1)
    live = []
    while (p := pool.place(one)) is not None:
        live.append(p)
    rng = random.Random(seed)
    began = time.perf_counter()
    for _ in range(decisions):
        pool.release(live.pop(rng.randrange(len(live))))
        live.append(pool.place(one))
    return (time.perf_counter() - began) / decisions * 1e6


# -- campaigns ---------------------------------------------------------------------------------

def _cpu_of(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def _server_pids(pgdata: Path) -> list[int]:
    """The postmaster and its children (the backends): the server's processes."""
    master = int((pgdata / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                pids.append(int(entry.name))
    return pids


def _pg_counters(url: str) -> tuple[int, int]:
    """(transactions committed + rolled back in the database, WAL position in bytes)."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = current_database()")
            xacts = int(cur.fetchone()[0])
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
            wal = int(cur.fetchone()[0])
    finally:
        conn.close()
    return xacts, wal


def _rows(url: str, sql: str) -> list[tuple]:
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
    else:
        import psycopg2

        conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        conn.close()


def _start_launchers(site: Path, url: str, count: int, nodes: int, env: dict
                     ) -> list[subprocess.Popen]:
    logs = site / "bench-logs"
    logs.mkdir(exist_ok=True)
    procs = []
    for i in range(count):
        with open(logs / f"launcher-{i}.log", "w") as out:  # the child keeps its copy
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site),
                 "--db-url", url, "--simulate", "--nodes", str(nodes), "--cores-per-node",
                 str(CORES_PER_NODE), "--gpus-per-node", str(GPUS_PER_NODE)],
                env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def _wait_registered(url: str, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _rows(url, "SELECT count(*) FROM bf_launchers WHERE state = 'RUNNING'")[0][0] >= \
                count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{count} launchers did not register within {timeout:g} s")


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def mixed_workload(nodes: int, gpu_tasks: int, mpi_tasks: int, seconds: float, seed: int = 1
                   ) -> list[tuple[Resources, float]]:
    """MPI tasks of 1 to 64 whole nodes (at most ``nodes``; 2-4 x ``seconds``) among
    one-GPU tasks (1-3 x ``seconds``), shuffled: the shapes of benchmarks/packing.py."""
    rng = random.Random(seed)
    sizes = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= nodes]
    tasks = [(Resources(num_nodes=rng.choice(sizes), ranks_per_node=GPUS_PER_NODE,
                        gpus_per_rank=1), rng.uniform(2, 4) * seconds)
             for _ in range(mpi_tasks)]
    tasks += [(Resources(gpus_per_rank=1), rng.uniform(1, 3) * seconds)
              for _ in range(gpu_tasks)]
    rng.shuffle(tasks)
    return tasks


def campaign(label: str, site: Path, url: str, *, launchers: int, nodes: int, tasks: int,
             seconds: float, env: dict, pgdata: Path | None = None,
             mixed: list[tuple[Resources, float]] | None = None,
             timeout: float = 1800.0) -> dict:
    """One simulated campaign of ``tasks`` one-GPU tasks (or the ``mixed`` shapes, submitted
    one by one and waited on with ``as_completed``); its figures, all measured."""
    from balsam_futures.backends import open_store

    site.mkdir(parents=True, exist_ok=True)
    open_store(url).close()  # the schema, before the launchers race to create it
    procs = _start_launchers(site, url, launchers, nodes, env)
    try:
        _wait_registered(url, launchers)
        before = _pg_counters(url) if pgdata else None
        # The launchers' connections (the master has not connected yet).
        conns = _rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database()")[0][0] - 1 if pgdata else None
        cpu_before = _cpu_of(_server_pids(pgdata)) if pgdata else None
        began = time.time()
        ex = BalsamExecutor(db_url=url, site=site, launcher=False)
        try:
            if mixed is None:
                view = ex.options(data={"sim_seconds": seconds},
                                  resources=Resources(gpus_per_rank=1))
                done = sum(1 for _ in view.map(abs, range(tasks), timeout=timeout))
            else:
                futures = [ex.options(data={"sim_seconds": sec}, resources=res).submit(abs, 0)
                           for res, sec in mixed]
                done = sum(1 for f in as_completed(futures, timeout=timeout)
                           if f.exception() is None)
        except TimeoutError:
            counts = ex.store.count_by_state()
            raise RuntimeError(f"{label}: not finished after {timeout:g} s; tasks by state: "
                               f"{counts}; see the launcher logs in {site}") from None
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
        wall = time.time() - began
        cpu = _cpu_of(_server_pids(pgdata)) - cpu_before if pgdata else None
        after = _pg_counters(url) if pgdata else None
    finally:
        _stop(procs)
    assert done == tasks
    runs = _rows(url, "SELECT launcher_id, started_at, ended_at, num_nodes * node_share "
                      "FROM bf_runs")
    starts = sorted(r[1] for r in runs)
    first, last_end = starts[0], max(r[2] for r in runs)
    gpus = launchers * nodes * GPUS_PER_NODE
    # Busy GPUs: a one-GPU run holds one (its node share x GPUs per node), an MPI run all of
    # its nodes' GPUs.
    held = [max(1.0, r[3] * GPUS_PER_NODE) for r in runs]
    busy = sum((r[2] - r[1]) * h for r, h in zip(runs, held))
    lo, hi = first + seconds, last_end - seconds
    steady = sum(max(0.0, min(r[2], hi) - max(r[1], lo)) * h for r, h in zip(runs, held))
    k = len(starts)
    mid = starts[k // 10], starts[(9 * k) // 10]
    waits = [w for (w,) in _rows(url, """
        SELECT r.at - q.at FROM bf_history r JOIN bf_history q
          ON q.task_id = r.task_id AND q.id = (SELECT max(id) FROM bf_history h
             WHERE h.task_id = r.task_id AND h.id < r.id AND h.to_state = 'READY')
        WHERE r.to_state = 'RUNNING'""")]
    if not waits:  # created READY: no history row for it; from the task's creation
        waits = [w for (w,) in _rows(url, """
            SELECT h.at - t.created_at FROM bf_history h JOIN bf_tasks t ON t.id = h.task_id
            WHERE h.to_state = 'RUNNING'""")]
    waits.sort()
    shares: dict[int, int] = {}
    for r in runs:
        shares[r[0]] = shares.get(r[0], 0) + 1
    fair = k / launchers
    out = {
        "campaign": label, "launchers": launchers, "nodes": nodes, "gpus": gpus,
        "tasks": tasks, "task_s": seconds, "wall_s": wall,
        "starts_per_s": k / max(1e-9, starts[-1] - first),
        "sustained_starts_per_s": (int(0.9 * k) - k // 10) / max(1e-9, mid[1] - mid[0]),
        "gpu_util": busy / (gpus * (last_end - first)),
        "gpu_util_steady": steady / (gpus * (hi - lo)) if hi > lo else float("nan"),
        "wait_p50_s": statistics.median(waits),
        "wait_p95_s": waits[int(0.95 * (len(waits) - 1))],
        "share_min": min(shares.values()) / fair, "share_max": max(shares.values()) / fair,
        "master_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if pgdata:
        out.update({"connections_per_launcher": conns / launchers, "db_cpu_s": cpu,
                    "xacts_per_task": (after[0] - before[0]) / tasks,
                    "wal_bytes_per_task": (after[1] - before[1]) / tasks,
                    "wal_bytes_per_s": (after[1] - before[1]) / wall})
    return out


_MASTER_CODE = """
import json, os, resource, sys, time
from balsam_futures import BalsamExecutor
n = int(sys.argv[2])
ex = BalsamExecutor(site=sys.argv[1], db_url=sys.argv[3] if len(sys.argv) > 3 else None,
                    launcher=False)
t = time.perf_counter()
results = ex.map(abs, range(n))
ex.flush()
stored = time.perf_counter() - t
print(json.dumps({"tasks": n, "stored_s": stored, "rows": sum(ex.store.count_by_state().values()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
      flush=True)
os._exit(0)  # 1,000,000 futures need not be cancelled one by one
"""


def master(site: Path, tasks: int, env: dict, url: str | None = None) -> dict:
    """``map`` of ``tasks`` with no launcher, in a child process (its own peak RSS)."""
    proc = subprocess.run([sys.executable, "-c", _MASTER_CODE, str(site), str(tasks),
                           *([url] if url else [])],
                          env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the master benchmark failed: {proc.stderr[-2000:]}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["store_rate"] = rec["rows"] / rec["stored_s"]
    return rec


# -- the command line and the indexes on many rows -----------------------------------------

CLI_COMMANDS = (("ls --by-states", ["ls", "--by-states"]),
                ("ls --state FAILED --limit 50", ["ls", "--state", "FAILED", "--limit", "50"]),
                ("ls --history --limit 50", ["ls", "--history", "--limit", "50"]),
                ("show ID", ["show", "{id}"]),
                ("stats", ["stats"]))


def cli_times(url: str, site: Path, env: dict) -> dict[str, float]:
    """Wall seconds of each command on the store at ``url`` (interpreter start included)."""
    some_id = _rows(url, "SELECT max(id) FROM bf_tasks")[0][0]
    out = {}
    for label, argv in CLI_COMMANDS:
        argv = [a.format(id=some_id) for a in argv]
        began = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "balsam_futures", *argv, "--site",
                               str(site), "--db-url", url], env=env, capture_output=True,
                              text=True, timeout=600)
        out[label] = time.perf_counter() - began
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed: {proc.stderr[-1000:]}")
    return out


def explain(url: str, events_url: str) -> dict[str, str]:
    """EXPLAIN of the claim's candidate query on the rows at ``url`` and of the watcher's
    event query (its last 1,000 events) on the history of the campaign at ``events_url``."""
    import psycopg2
    from sqlalchemy.dialects import postgresql

    from balsam_futures.backends.statements import lifecycle

    plans = {}
    last = _rows(events_url, "SELECT coalesce(max(id), 0) FROM bf_history")[0][0]
    for label, where, stmt, params in (
            ("claim", url, lifecycle.select_claimable(NODES, (), GPUS_PER_NODE),
             {"limit": 2080}),
            ("watcher", events_url, lifecycle.select_events(),
             {"after": max(0, last - 1000), "limit": 1000})):
        compiled = stmt.compile(dialect=postgresql.psycopg2.dialect(),
                                compile_kwargs={"render_postcompile": True})
        values = {**compiled.params, **params}
        conn = psycopg2.connect(where)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("ANALYZE")  # the statistics autovacuum keeps on a live store
                cur.execute("EXPLAIN " + str(compiled), values)
                plans[label] = "\n".join(r[0] for r in cur.fetchall())
        finally:
            conn.close()
    return plans


# -- the run -----------------------------------------------------------------------------------

def run(args) -> dict:
    from balsam_futures.backends.pgserver import LocalPostgres

    scale = args.scale
    nodes = max(1, round(NODES * scale))
    figures: dict = {"scale": scale, "placement_us": {n: placement_us(n) for n in (512, 4096)}}
    base = Path(tempfile.mkdtemp(prefix="bf-scale-"))
    os.chmod(base, 0o711)  # the server's user (as root: postgres) must enter it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    try:
        if "postgres" in args.sections:
            site = base / "pg"
            site.mkdir()
            os.chmod(site, 0o711)
            server = LocalPostgres(site / "postgres",
                                   run_as="postgres" if os.geteuid() == 0 else None)
            url = server.start()
            try:
                figures["postgres"] = campaign(
                    "PostgreSQL", site, url, launchers=LAUNCHERS, nodes=nodes,
                    tasks=max(1, round(PG_TASKS * scale)),
                    seconds=args.task_seconds or 10.0, env=env, pgdata=server.datadir)
                if "cli" in args.sections:  # on as many rows as the master section's
                    rows = max(1, round(MASTER_TASKS * scale))
                    server.create_database("many")
                    many = server.url("many")
                    master(site, rows, env, many)
                    figures["cli_postgres"] = {"rows": rows, **cli_times(many, site, env)}
                    figures["explain"] = explain(many, url)
                if "mixed" in args.sections:  # a database of its own: its own figures
                    mixed = mixed_workload(nodes, max(1, round(MIXED_GPU_TASKS * scale)),
                                           max(1, round(MIXED_MPI_TASKS * scale)),
                                           args.task_seconds or 10.0)
                    server.create_database("mixed")
                    figures["mixed"] = campaign(
                        "mixed shapes", site, server.url("mixed"), launchers=LAUNCHERS,
                        nodes=nodes, tasks=len(mixed), seconds=args.task_seconds or 10.0,
                        env=env, pgdata=server.datadir, mixed=mixed)
            finally:
                server.stop(mode="immediate")
        if "sqlite" in args.sections:
            site = base / "lite"
            figures["sqlite"] = campaign(
                "SQLite", site, f"sqlite:///{site}/balsam.db", launchers=1, nodes=nodes,
                tasks=max(1, round(SQLITE_TASKS * scale)),
                seconds=args.task_seconds or 5.0, env=env)
        if "master" in args.sections:
            figures["master"] = master(base / "master", max(1, round(MASTER_TASKS * scale)),
                                       env)
            if "cli" in args.sections:
                url = f"sqlite:///{base / 'master' / 'balsam.db'}"
                figures["cli_sqlite"] = {"rows": figures["master"]["rows"],
                                         **cli_times(url, base / "master", env)}
    finally:
        if args.keep_logs:
            keep_logs(base, Path(args.keep_logs))
        shutil.rmtree(base, ignore_errors=True)
    return figures


def keep_logs(base: Path, dest: Path) -> None:
    """Copy the launchers' logs of every campaign (``<section>-<name>``) to ``dest`` before
    the temporary directory goes: what a launcher said when its share or a campaign looks
    wrong."""
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in ("*/logs/*.log", "*/bench-logs/*.log"):  # the site's, and their stderr
        for log in base.glob(pattern):
            shutil.copy2(log, dest / f"{log.parent.parent.name}-{log.parent.name}-{log.name}")


def render(f: dict) -> str:
    lines = [f"scale {f['scale']:g}", "",
             "| figure | PostgreSQL, 8 launchers | mixed shapes, PostgreSQL, 8 launchers "
             "| SQLite, 1 launcher |",
             "|---|---|---|---|"]
    pg, mx, lite = f.get("postgres", {}), f.get("mixed", {}), f.get("sqlite", {})
    recs = (pg, mx, lite)

    def cell(rec, key, fmt):
        return fmt.format(rec[key]) if key in rec and rec[key] is not None else "-"

    for name, key, fmt in [
        ("launchers x nodes x GPUs", None, None),
        ("tasks (one GPU each), run seconds", None, None),
        ("campaign wall time, s", "wall_s", "{:.1f}"),
        ("task starts/s, whole campaign", "starts_per_s", "{:,.0f}"),
        ("task starts/s, sustained (middle 80 %)", "sustained_starts_per_s", "{:,.0f}"),
        ("GPU utilization, first start to last end", "gpu_util", "{:.1%}"),
        ("GPU utilization, without ramp-up and tail", "gpu_util_steady", "{:.1%}"),
        ("READY->RUNNING wait p50, s", "wait_p50_s", "{:.3f}"),
        ("READY->RUNNING wait p95, s", "wait_p95_s", "{:.3f}"),
        ("launcher share, min / max of fair", None, None),
        ("master peak RSS, MB", "master_peak_rss_mb", "{:,.0f}"),
        ("database connections per launcher", "connections_per_launcher", "{:.1f}"),
        ("database server CPU, s", "db_cpu_s", "{:.1f}"),
        ("transactions per task", "xacts_per_task", "{:.3f}"),
        ("WAL bytes per task", "wal_bytes_per_task", "{:,.0f}"),
        ("WAL bytes/s", "wal_bytes_per_s", "{:,.0f}"),
    ]:
        if key is None and name.startswith("launchers"):
            row = [f"{r['launchers']} x {r['nodes']} x {GPUS_PER_NODE}" if r else "-"
                   for r in recs]
        elif key is None and name.startswith("tasks"):
            row = [f"{r['tasks']:,}, {r['task_s']:g} s" if r else "-" for r in recs]
            if mx:
                row[1] = f"{mx['tasks']:,} (MPI 1-64 nodes: 2-4 x {mx['task_s']:g} s)"
        elif key is None:
            row = [f"{r['share_min']:.2f} / {r['share_max']:.2f}" if r else "-"
                   for r in recs]
        else:
            row = [cell(r, key, fmt) for r in recs]
        lines.append(f"| {name} | {' | '.join(row)} |")
    lines += ["", "| placement (one-GPU task, full pool, place + release) | us |", "|---|---|"]
    for n, us in f["placement_us"].items():
        lines.append(f"| {n:,} nodes x {GPUS_PER_NODE} GPUs | {us:.1f} |")
    if "master" in f:
        m = f["master"]
        lines += ["", "| master: map with launcher=False | |", "|---|---|",
                  f"| tasks | {m['tasks']:,} |",
                  f"| store rate, tasks/s (map to all rows READY) | {m['store_rate']:,.0f} |",
                  f"| peak RSS of the master process, MB | {m['peak_rss_mb']:,.0f} |"]
    cli_pg, cli_lite = f.get("cli_postgres"), f.get("cli_sqlite")
    if cli_pg or cli_lite:
        rows = (cli_pg or cli_lite)["rows"]
        lines += ["", f"| command on {rows:,} rows, s (interpreter start included) "
                  "| PostgreSQL | SQLite |", "|---|---|---|"]
        for label, _argv in CLI_COMMANDS:
            row = [f"{c[label]:.2f}" if c else "-" for c in (cli_pg, cli_lite)]
            lines.append(f"| {label} | {row[0]} | {row[1]} |")
    for label, plan in f.get("explain", {}).items():
        rows = f"{cli_pg['rows']:,} READY rows" if label == "claim" else \
            "the history of the 8-launcher campaign, its last 1,000 events"
        lines += ["", f"EXPLAIN ({label} query, PostgreSQL, {rows}):", plan]
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every node and task count by this (e.g. 0.01)")
    ap.add_argument("--task-seconds", type=float, default=None,
                    help="simulated run seconds of every task (default: 10 on PostgreSQL, "
                         "5 on SQLite)")
    ap.add_argument("--sections", default="postgres,mixed,sqlite,master,cli",
                    help="comma-separated: postgres, mixed (with postgres), sqlite, master, "
                         "cli (the command line and EXPLAIN on as many rows as the master's, "
                         "on both backends; with postgres and master)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--keep-logs", default=None, metavar="DIR",
                    help="copy the launchers' logs to DIR before the temporary sites go")
    args = ap.parse_args(argv)
    if not 0 < args.scale <= 1:
        ap.error(f"--scale must be in (0, 1], not {args.scale}")
    if args.task_seconds is not None and args.task_seconds < 0:
        ap.error(f"--task-seconds must be >= 0, not {args.task_seconds}")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - {"postgres", "mixed", "sqlite", "master", "cli"}
    if unknown:
        ap.error(f"--sections: unknown {', '.join(sorted(unknown))}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    figures = run(args)
    print(render(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
