#!/usr/bin/env python
"""Benchmark the launcher: shell-task launch rate, and claim cost against the backlog size.

    python benchmarks/launcher.py [--quick] [--postgres] [--profile] [--json FILE]
                                  [--only shell|claims] [--backlogs 1000,1000000]
                                  [--time-limit SECONDS]

1. Shell task launch rate: ``ShellApp("/bin/true")`` on ``BalsamExecutor(max_workers=2)`` (its
   own local launcher, a fresh SQLite site). Rounds of N submits, each timed until every future
   has resolved (end to end), and the launcher's own rate from the tasks' history: first
   RUNNING to last JOB_FINISHED. CPU seconds of the master, the launcher and its workers (with
   the ``/bin/true`` children they reaped) are read from /proc around each round. With
   ``--profile`` one more round runs under ``py-spy record`` (all threads and subprocesses of
   this process) and the busiest functions are printed per process and thread.
2. Claim cost against the backlog: a fresh store holding 1,000 and then 1,000,000 READY rows
   (bulk-created with ``store.create_tasks`` in chunks of 10,000, a one-byte payload; the rate
   of that build is reported too); then ``store.claim(launcher_id, n)`` for n = 1, 16 and 64,
   each claim followed by ``store.record_outcomes`` for what it got. The backlog is topped up
   between rounds so it stays at its size, and the sizes are measured in turn, three passes
   over, so that a change in the machine's load hits them alike. SQLite, and with
   ``--postgres`` also a throwaway PostgreSQL server (as ``postgres.py`` starts one).

Targets: >= 300 shell tasks/s; claim cost at 1M READY rows within 1.5x of the cost at 1k.
``--quick`` runs fewer shell tasks and a 100,000-row backlog instead of 1M. Each measurement
has a time limit (``--time-limit``, default 120 s), checked between calls. The benchmark never
asserts: it reports, and exits 0 whatever the figures (130 after Ctrl-C, with the report so far).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import executors as bx  # noqa: E402  (the harness next to this file)
from executors import log, now, remaining  # noqa: E402

MAX_WORKERS = 2
SHELL_COMMAND = "/bin/true"
SHELL_WARMUP = 50  # untimed tasks after the first: worker imports, statements, page cache
BUILD_CHUNK = 10_000  # rows per create_tasks call while building a backlog
BATCHES = (1, 16, 64)
#: Tasks claimed per round before the backlog is topped up again: at most half the backlog,
#: so the READY count never drops below half of its nominal size during a round.
TAKE_PER_ROUND = 512
#: Each batch size is measured for at least this long in all (timed claims + records only),
#: and for at least MIN_ROUNDS rounds per pass; more time gives steadier medians on a noisy
#: machine.
MIN_TIMED_S = 0.6
MIN_ROUNDS = 2
MAX_ROUNDS = 400
#: Every backlog size is measured in turn this many times over (see measure_claims).
PASSES = 3
PROFILE_RATE_HZ = 200  # py-spy samples per second: higher costs CPU the run itself needs

TARGET_SHELL_RATE = 300.0
TARGET_CLAIM_RATIO = 1.5

FULL = {"shell_tasks": 1_000, "shell_rounds": 3, "backlogs": (1_000, 1_000_000)}
QUICK = {"shell_tasks": 300, "shell_rounds": 1, "backlogs": (1_000, 100_000)}

SQLITE, PG = "sqlite", "postgresql"
TITLES = {SQLITE: "SQLite", PG: "PostgreSQL"}


class TimeLimit(Exception):
    """A measurement ran past its deadline (checked between calls)."""


def check_deadline(deadline: float, what: str) -> None:
    if now() > deadline:
        raise TimeLimit(what)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc (Linux): where the CPU goes among the processes of a run

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, CPU s of reaped children) of ``pid``, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based here.
    own = (int(fields[11]) + int(fields[12])) / _TICK
    kids = (int(fields[13]) + int(fields[14])) / _TICK
    return int(fields[1]), own, kids


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(stat.parent.name))
    return out


def cpu_snapshot(launcher_pid: int | None) -> dict[str, float]:
    """CPU seconds so far: this process, the launcher, its workers (with reaped children)."""
    snap: dict[str, float] = {}
    me = proc_stat(os.getpid())
    if me:
        snap["master"] = me[1]
    if launcher_pid is not None:
        st = proc_stat(launcher_pid)
        if st:
            snap["launcher"] = st[1]
        workers = own = kids = 0.0
        for pid in children_of(launcher_pid):
            st = proc_stat(pid)
            if st:
                workers += 1
                own += st[1]
                kids += st[2]
        snap["workers"] = own
        snap["worker_children"] = kids
        snap["n_workers"] = workers
    return snap


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if k in before and k != "n_workers"}


# --------------------------------------------------------------------------------------------
# 1. shell task launch rate


def shell_round(ex, app, n: int, deadline: float, after_wait=None) -> dict[str, Any]:
    """Submit ``n`` shell tasks, wait for all; rates end to end and from the history.
    ``after_wait()`` is called as soon as every task has ended (a profiler stops there)."""
    launcher_pid = ex._launcher.pid if ex._launcher is not None else None
    cpu0 = cpu_snapshot(launcher_pid)
    t0 = now()
    futs = [ex.submit(app) for _ in range(n)]
    t_submitted = now()
    done, pending = cf.wait(futs, timeout=remaining(deadline))
    t1 = now()
    cpu = cpu_delta(cpu0, cpu_snapshot(launcher_pid))
    if after_wait is not None:
        after_wait()
    if pending:
        for f in pending:
            f.cancel()
        raise TimeLimit(f"{len(pending)} of {n} shell tasks unfinished at the time limit")
    failed = [f for f in futs if f.exception() is not None]
    wrong = [f for f in futs if f.exception() is None and f.result().return_code != 0]
    # The launcher's own rate: from its first claim to its last finished write.
    first_running, last_finished = float("inf"), float("-inf")
    for f in futs:
        for h in ex.store.history(f.task_id):
            if h["to_state"] == "RUNNING":
                first_running = min(first_running, h["at"])
            elif h["to_state"] == "JOB_FINISHED":
                last_finished = max(last_finished, h["at"])
    launcher_s = last_finished - first_running
    wall = t1 - t0
    return {
        "n": n,
        "submit_s": t_submitted - t0,
        "submit_rate": n / (t_submitted - t0),
        "wall_s": wall,
        "tasks_per_s": n / wall,
        "launcher_s": launcher_s,
        "launcher_rate": n / launcher_s if launcher_s > 0 else None,
        "failed": len(failed),
        "nonzero_exit": len(wrong),
        "first_error": repr(failed[0].exception()) if failed else None,
        "cpu_s": cpu,
        "cpu_ms_per_task": {k: 1e3 * v / n for k, v in cpu.items()},
    }


def find_py_spy() -> str | None:
    near = Path(sys.executable).parent / "py-spy"
    return str(near) if near.exists() else shutil.which("py-spy")


def profile_round(ex, app, n: int, deadline: float, out_dir: str) -> dict[str, Any]:
    """One more round under ``py-spy record`` (this process and all its subprocesses)."""
    spy = find_py_spy()
    if spy is None:
        return {"status": "py-spy not found (pip install py-spy)"}
    raw = os.path.join(out_dir, "profile.txt")
    argv = [spy, "record", "--pid", str(os.getpid()), "--subprocesses", "--threads",
            "--nonblocking", "--format", "raw", "--rate", str(PROFILE_RATE_HZ), "-o", raw]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches to every process before the round starts
    if proc.poll() is not None:
        return {"status": f"py-spy failed: {proc.stderr.read().decode(errors='replace')[-300:]}"}
    stopped: list[bytes] = []

    def stop() -> None:
        if stopped:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        stopped.append(err)

    try:
        rec = shell_round(ex, app, n, deadline, after_wait=stop)
    finally:
        stop()
    err = stopped[0]
    if not os.path.exists(raw):
        return {"status": f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}",
                "round": rec}
    return {"status": "ok", "round": rec, **summarize_profile(raw, os.getpid())}


_PROCESS = re.compile(r'process (\d+):"(.*?)";(?=process |thread )')
_THREAD = re.compile(r"^thread \(\d+\): (.*)$")
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _role(chain: list[tuple[int, str]], master: int) -> str:
    """Name a sampled process by its place under this one: the benchmark (master), the
    launcher, a worker, or a forked child before it became ``/bin/true``."""
    depth = next((i for i, (pid, _) in enumerate(chain) if pid == master), 0)
    level = len(chain) - 1 - depth
    return {0: "master", 1: "launcher", 2: "worker"}.get(level, "worker's fork (pre-exec)")


def summarize_profile(path: str, master: int, top: int = 6) -> dict[str, Any]:
    """Active samples per process role and thread, the busiest functions (self time) and
    the library functions with most time inside them (inclusive)."""
    samples: Counter[str] = Counter()
    self_t: dict[str, Counter[str]] = defaultdict(Counter)
    incl: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        chain = []
        # Process frames first; a command line may hold ";" (the workers' "-c" code does).
        while m := _PROCESS.match(stack):
            chain.append((int(m.group(1)), m.group(2)))
            stack = stack[m.end():]
        thread, frames = "?", []
        for p in stack.split(";"):
            m = _THREAD.match(p)
            if m:
                thread = m.group(1)
                continue
            fm = _FRAME.match(p)
            frames.append(f"{fm.group(1)} ({fm.group(2)})" if fm else p)
        key = f"{_role(chain, master)} / {thread}"
        samples[key] += k
        total += k
        if frames:
            self_t[key][frames[-1]] += k
        for f in dict.fromkeys(frames):  # once per stack, however deep the recursion
            if "balsam_futures/" in f:
                incl[key][f] += k
    groups = {}
    for key, n in samples.most_common():
        groups[key] = {
            "samples": n,
            "cpu_s": n / PROFILE_RATE_HZ,
            "share": n / total if total else 0.0,
            "self": self_t[key].most_common(top),
            "inclusive": incl[key].most_common(3 * top),
        }
    return {"samples": total, "rate_hz": PROFILE_RATE_HZ, "groups": groups}


def measure_shell(args, sizes, tmp: str) -> dict[str, Any]:
    from balsam_futures import BalsamExecutor, ShellApp

    rec: dict[str, Any] = {"status": "ok", "command": SHELL_COMMAND, "workers": MAX_WORKERS}
    app = ShellApp(SHELL_COMMAND)
    deadline = now() + args.time_limit
    t0 = now()
    ex = BalsamExecutor(max_workers=MAX_WORKERS, site=os.path.join(tmp, "site-shell"))
    try:
        rec["startup_s"] = now() - t0
        t0 = now()
        ex.submit(app).result(timeout=remaining(deadline))
        rec["first_task_s"] = now() - t0
        warm = [ex.submit(app) for _ in range(SHELL_WARMUP)]
        cf.wait(warm, timeout=remaining(deadline))
        rounds = []
        for i in range(sizes["shell_rounds"]):
            deadline = now() + args.time_limit
            r = shell_round(ex, app, sizes["shell_tasks"], deadline)
            rounds.append(r)
            log(f"[shell] round {i + 1}: {r['tasks_per_s']:.0f} tasks/s end to end, launcher "
                f"{r['launcher_rate'] or 0:.0f} tasks/s, submit() {r['submit_rate']:.0f}/s")
        rec["rounds"] = rounds
        if args.profile:
            log("[shell] one more round under py-spy ...")
            deadline = now() + args.time_limit
            rec["profile"] = profile_round(ex, app, sizes["shell_tasks"], deadline, tmp)
            if rec["profile"].get("round"):
                r = rec["profile"]["round"]
                log(f"[shell] profiled round: {r['tasks_per_s']:.0f} tasks/s end to end")
    finally:
        t0 = now()
        ex.shutdown(wait=True, cancel_futures=True)
        rec["shutdown_s"] = now() - t0
    return rec


# --------------------------------------------------------------------------------------------
# 2. claim cost against the backlog


def tiny_specs(n: int) -> list:
    from balsam_futures.tasks import TaskOptions, TaskSpec

    opts = TaskOptions()  # shared: create_tasks encodes the common columns once per object
    return [TaskSpec("python", b"x", opts, name="bench") for _ in range(n)]


def build_backlog(store, n: int, deadline: float) -> float:
    """Create ``n`` READY rows in chunks; returns the seconds it took."""
    t0 = now()
    for start in range(0, n, BUILD_CHUNK):
        store.create_tasks(tiny_specs(min(BUILD_CHUNK, n - start)))
        check_deadline(deadline, f"backlog build: {start + BUILD_CHUNK:,} of {n:,} rows")
    return now() - t0


def measure_batch(store, lid: int, backlog: int, batch: int, min_s: float, deadline: float,
                  acc: dict[str, list[float]]) -> None:
    """Claim ``batch`` at a time and record each claim's outcomes, in rounds of at most
    TAKE_PER_ROUND tasks, topping the backlog up (untimed) after every round; appends the
    time of every claim and record to ``acc``."""
    from balsam_futures.backends import TaskOutcome
    from balsam_futures.tasks import TaskState, outcome_path

    done_path = outcome_path(TaskState.RUN_DONE, 0, 0, True)
    take = max(batch, min(backlog // 2, TAKE_PER_ROUND) // batch * batch)
    rounds = 0
    timed = 0.0
    # Round 0 is a warm-up (statements, caches, the other store's pages evicted); not timed.
    while rounds <= MIN_ROUNDS or (timed < min_s and rounds <= MAX_ROUNDS):
        check_deadline(deadline, f"claims of {batch} from {backlog:,}: {rounds} rounds done")
        got = 0
        while got < take:
            t0 = now()
            claimed = store.claim(lid, batch)
            t1 = now()
            store.record_outcomes(lid, [TaskOutcome(t.id, done_path, result=b"r")
                                        for t in claimed])
            t2 = now()
            if len(claimed) != batch:
                raise RuntimeError(f"claim({batch}) returned {len(claimed)} tasks with "
                                   f"{backlog - got:,} READY rows expected")
            got += batch
            if rounds:
                acc["claim_s"].append(t1 - t0)
                acc["record_s"].append(t2 - t1)
                timed += t2 - t0
        store.create_tasks(tiny_specs(got))  # back to ``backlog`` READY rows
        rounds += 1
    acc["rounds"].append(rounds - 1)
    acc["take_per_round"] = [take]


def batch_figures(batch: int, acc: dict[str, list[float]]) -> dict[str, Any]:
    claim_s, record_s = acc["claim_s"], acc["record_s"]
    per_call = [c + r for c, r in zip(claim_s, record_s)]
    return {
        "batch": batch,
        "calls": len(claim_s),
        "tasks": batch * len(claim_s),
        "timed_s": sum(per_call),
        "rounds": sum(acc["rounds"]),
        "take_per_round": acc["take_per_round"][0],
        # tasks/s from the median claim+record pair: robust to a noisy neighbour's spikes
        "tasks_per_s": batch / median(per_call),
        "mean_tasks_per_s": batch * len(per_call) / sum(per_call),
        "claim_p50_ms": 1e3 * median(claim_s),
        "record_p50_ms": 1e3 * median(record_s),
        "claim_p95_ms": 1e3 * bx.percentile(sorted(claim_s), 95),
    }


def measure_claims(backend: str, open_fresh, args) -> dict[int, dict[str, Any]]:
    """Build one store per backlog size, then measure them in turn, PASSES times over, so
    that a change in the machine's load during the run hits every size alike."""
    from balsam_futures.backends import LauncherInfo

    recs: dict[int, dict[str, Any]] = {}
    stores: dict[int, tuple[Any, str | None, int]] = {}
    try:
        for backlog in args.backlogs:
            rec = recs[backlog] = {"status": "ok", "backend": backend, "backlog": backlog}
            try:
                store, where = open_fresh(f"claims_{backlog}")
                stores[backlog] = (store, where, 0)
                build_s = build_backlog(store, backlog, now() + args.time_limit)
                rec.update(build_s=build_s, build_rate=backlog / build_s)
                # A long lease: this launcher is silent while the next backlog is built
                # (40 s for 1,000,000 rows on PostgreSQL), past the default lease.
                lid = store.register_launcher(LauncherInfo("benchmark", os.getpid(),
                                                           {"claims": True}, lease_s=3600.0))
                stores[backlog] = (store, where, lid)
                log(f"[claims {TITLES[backend]} {backlog:,}] built in {build_s:.1f} s "
                    f"({backlog / build_s:,.0f} rows/s)")
            except TimeLimit as e:
                rec.update(status="timed out", detail=str(e))
            except Exception as e:
                rec.update(status="error", detail=f"{type(e).__name__}: {e}",
                           traceback=traceback.format_exc())
                log(traceback.format_exc())
        live = [b for b in args.backlogs if recs[b]["status"] == "ok"]
        acc = {(b, n): {"claim_s": [], "record_s": [], "rounds": []}
               for b in live for n in BATCHES}
        deadline = now() + args.time_limit
        try:
            for _ in range(PASSES):
                for n in BATCHES:
                    for b in live:
                        store, _where, lid = stores[b]
                        measure_batch(store, lid, b, n, MIN_TIMED_S / PASSES, deadline,
                                      acc[b, n])
        except TimeLimit as e:
            for b in live:
                recs[b].update(status="timed out", detail=str(e))
        for b in live:
            recs[b]["batches"] = {n: batch_figures(n, acc[b, n]) for n in BATCHES
                                  if acc[b, n]["claim_s"]}
            for n, f in recs[b]["batches"].items():
                log(f"[claims {TITLES[backend]} {b:,}] batch {n}: {f['tasks_per_s']:,.0f} "
                    f"tasks/s (claim p50 {f['claim_p50_ms']:.2f} ms, record p50 "
                    f"{f['record_p50_ms']:.2f} ms)")
            store, where, _lid = stores[b]
            recs[b]["by_state"] = store.count_by_state()
            if where and os.path.exists(where):
                recs[b]["db_mb"] = os.path.getsize(where) / 1e6
    finally:
        for store, _where, _lid in stores.values():
            with contextlib.suppress(Exception):
                store.close()
    return recs


class PgServer:
    """A throwaway private PostgreSQL server, as ``postgres.py`` starts one."""

    def __init__(self, tmp: str):
        from balsam_futures.backends.pgserver import LocalPostgres

        run_as = "postgres" if os.geteuid() == 0 else None
        self.pg = LocalPostgres(os.path.join(tmp, "pg"), run_as=run_as)
        self.info: dict[str, Any] = {"run_as": run_as}

    def start(self) -> None:
        import postgres as pgbench  # benchmarks/postgres.py: server facts

        t0 = now()
        url = self.pg.start()
        self.info["startup_s"] = now() - t0
        self.info.update(pgbench.server_settings(url))
        self.info["binary"] = pgbench.postgres_binary_version()

    def stop(self) -> None:
        try:
            self.pg.stop()
        except Exception as e:
            log(f"[server] pg_ctl stop -m fast failed: {e!r}; trying -m immediate")
            self.pg.stop("immediate")


# --------------------------------------------------------------------------------------------
# report


def yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


def fmt_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:-2], widths[1:-2])]
        tail = [c.ljust(w) for c, w in zip(cells[-2:], widths[-2:])]
        return "  ".join([first, *rest, *tail]).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def shell_rows(rec: dict[str, Any]) -> list[list[str]]:
    if rec.get("status") != "ok" or not rec.get("rounds"):
        return [["shell /bin/true", rec.get("status", "not run"), "", ""]]
    rounds = rec["rounds"]
    n = rounds[0]["n"]
    e2e = median([r["tasks_per_s"] for r in rounds])
    own = median([r["launcher_rate"] or 0.0 for r in rounds])
    sub = median([r["submit_rate"] for r in rounds])
    bad = sum(r["failed"] + r["nonzero_exit"] for r in rounds)
    star = "*" if bad else ""
    k = f"median of {len(rounds)}" if len(rounds) > 1 else "1 round"
    return [
        [f"shell {SHELL_COMMAND}, {n:,} tasks, {MAX_WORKERS} workers: end to end (tasks/s, {k})",
         f"{e2e:,.0f}{star}", f">={TARGET_SHELL_RATE:.0f}", yes_no(e2e >= TARGET_SHELL_RATE)],
        ["  launcher: first RUNNING to last JOB_FINISHED (tasks/s)", f"{own:,.0f}{star}",
         f">={TARGET_SHELL_RATE:.0f}", yes_no(own >= TARGET_SHELL_RATE)],
        ["  submit() calls alone (tasks/s)", f"{sub:,.0f}", "-", "-"],
        ["  start-up: constructor / first task (s)",
         f"{rec['startup_s']:.2f} / {rec['first_task_s']:.3f}", "-", "-"],
    ]


def human(n: int) -> str:
    """1000 -> 1k, 1000000 -> 1M (other counts as they are)."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div:,}{unit}"
    return f"{n:,}"


def claim_rows(results: dict[str, dict[int, dict[str, Any]]], backlogs) -> tuple[list, list]:
    lo, hi = min(backlogs), max(backlogs)
    header = ["claim + record", *[f"{b:,} READY" for b in backlogs],
              f"cost {human(hi)}/{human(lo)}", "target", "met"]
    rows = []
    for backend, by_backlog in results.items():
        title = TITLES[backend]
        cells = [f"{title}: build backlog (rows/s)"]
        for b in backlogs:
            r = by_backlog.get(b, {})
            cells.append(f"{r['build_rate']:,.0f}" if "build_rate" in r else r.get("status", "-"))
        rows.append(cells + ["", "-", "-"])
        for batch in BATCHES:
            # (label, key, format, cost of a figure: rates cost 1/x, times cost x)
            for label, key, fmt, cost in (
                (f"{title}: claim({batch}) + record (tasks/s)", "tasks_per_s", "{:,.0f}",
                 lambda x: 1 / x),
                (f"  claim({batch}) call alone, p50 (ms)", "claim_p50_ms", "{:.3f}",
                 lambda x: x),
            ):
                cells = [label]
                costs = {}
                for b in backlogs:
                    r = by_backlog.get(b, {})
                    br = r.get("batches", {}).get(batch)
                    if br:
                        costs[b] = cost(br[key])
                        cells.append(fmt.format(br[key]))
                    else:
                        cells.append(r.get("status", "-"))
                if lo in costs and hi in costs:
                    ratio = costs[hi] / costs[lo]
                    cells += [f"{ratio:.2f}x", f"<={TARGET_CLAIM_RATIO}x",
                              yes_no(ratio <= TARGET_CLAIM_RATIO)]
                else:
                    cells += ["-", f"<={TARGET_CLAIM_RATIO}x", "-"]
                rows.append(cells)
    return header, rows


def render_report(args, machine, results) -> str:
    m = machine
    out = ["", "=" * 78, "Launcher benchmark" + ("  (--quick)" if args.quick else ""), "=" * 78,
           f"machine: nproc={m['nproc']} (os.cpu_count={m['os_cpu_count']}), {m['platform']}",
           f"python:  {m['implementation']} {m['python']}, sqlite {m['sqlite']}, "
           f"sqlalchemy {m.get('sqlalchemy')}, psycopg2 {m.get('psycopg2')}",
           f"balsam_futures: {m.get('balsam')}"]
    if "server" in results:
        s = results["server"]
        out.append(f"postgres: {s.get('binary', '?')}; fsync={s.get('fsync')}, "
                   f"synchronous_commit={s.get('synchronous_commit')}, "
                   f"shared_buffers={s.get('shared_buffers')}, status {s.get('status')}")
    if "loadavg_at_start" in m:
        out.append(bx.load_average_line(m))
    notes = []
    if "shell" in results:
        out += ["", fmt_table(["shell tasks", "value", "target", "met"],
                              shell_rows(results["shell"]))]
        notes += shell_notes(results["shell"])
    if results.get("claims"):
        header, rows = claim_rows(results["claims"], args.backlogs)
        out += ["", fmt_table(header, rows)]
        for backend, by_backlog in results["claims"].items():
            for b, r in by_backlog.items():
                if r.get("status") != "ok":
                    notes.append(f"claims {TITLES[backend]} {b:,}: {r.get('status')}: "
                                 f"{r.get('detail', '')}")
                elif r.get("db_mb"):
                    notes.append(f"{TITLES[backend]} store with {b:,} READY rows (and the "
                                 f"finished ones): {r['db_mb']:.0f} MB")
        notes.append("claim + record rate = batch / median(time of one claim(n) plus the "
                     "record_outcomes of what it got); cost ratio = cost per task (or per "
                     "call) at the large backlog / at the small one (1.00x: no growth)")
    if m["nproc"] <= MAX_WORKERS + 1:
        notes.append(f"only {m['nproc']} CPUs: the benchmark, the launcher and {MAX_WORKERS} "
                     "workers (and the server) share them; figures are contention-bound")
    out.append("")
    out.append("notes:")
    out += [f"  - {n}" for n in notes]
    if "shell" in results and results["shell"].get("profile"):
        out += ["", render_profile(results["shell"]["profile"])]
    return "\n".join(out)


def shell_notes(rec: dict[str, Any]) -> list[str]:
    notes = []
    if rec.get("status") != "ok":
        notes.append(f"shell: {rec.get('status')}: {rec.get('detail', '')}")
    for i, r in enumerate(rec.get("rounds", []), 1):
        cpu = r["cpu_ms_per_task"]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        notes.append(f"shell round {i}: {r['tasks_per_s']:,.0f} tasks/s end to end, launcher "
                     f"{r['launcher_rate'] or 0:,.0f}/s; CPU ms per task: {parts}")
        if r["failed"] or r["nonzero_exit"]:
            notes.append(f"shell round {i}: {r['failed']} failed, {r['nonzero_exit']} "
                         f"non-zero exits; first error {r['first_error']} (* in the table)")
    return notes


def render_profile(prof: dict[str, Any]) -> str:
    if prof.get("status") != "ok":
        return f"profile: {prof.get('status')}"
    r = prof["round"]
    out = [f"profile (py-spy, {prof['rate_hz']} Hz, active samples only; the profiled round ran "
           f"at {r['tasks_per_s']:,.0f} tasks/s over {r['wall_s']:.2f} s):"]
    for key, g in prof["groups"].items():
        if g["share"] < 0.02:
            continue
        out.append(f"  {key}: {g['cpu_s']:.2f} CPU s ({100 * g['share']:.0f} % of samples, "
                   f"{1e3 * g['cpu_s'] / r['n']:.2f} ms per task)")
        # Functions on nearly every stack (the worker's or the launcher's main loop) say
        # nothing; the rest show where the time is spent below them.
        inside = [(f, n) for f, n in g["inclusive"] if n < 0.95 * g["samples"]]
        for label, items in (("self", g["self"]), ("in", inside)):
            for frame, n in items[:5]:
                out.append(f"      {label:<4} {100 * n / g['samples']:5.1f} %  {frame}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true",
                    help="fewer shell tasks, a 100,000-row backlog instead of 1M (smoke run)")
    ap.add_argument("--postgres", action="store_true",
                    help="also measure claims on a throwaway PostgreSQL server")
    ap.add_argument("--profile", action="store_true",
                    help="one more shell round under py-spy: where the CPU time goes")
    ap.add_argument("--only", choices=("shell", "claims"), help="run one part only")
    ap.add_argument("--backlogs", metavar="N,N",
                    help="READY rows for the claim measurement (default 1000,1000000)")
    ap.add_argument("--json", metavar="FILE", help="write all raw numbers to FILE")
    ap.add_argument("--time-limit", type=float, default=120.0, metavar="S",
                    help="time limit per measurement (default %(default)s s)")
    args = ap.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.backlogs:
        try:
            sizes["backlogs"] = tuple(int(x.replace("_", "")) for x in args.backlogs.split(","))
        except ValueError:
            ap.error(f"--backlogs takes comma-separated row counts, e.g. 1000,1000000; "
                     f"got {args.backlogs!r}")
        if len(sizes["backlogs"]) < 2 or min(sizes["backlogs"]) < 2 * max(BATCHES):
            ap.error(f"--backlogs needs at least two sizes, each >= {2 * max(BATCHES)}")
    args.backlogs = tuple(sorted(set(sizes["backlogs"])))
    return args, sizes


def run(args, sizes, results: dict[str, Any], tmp: str) -> None:
    if args.only in (None, "shell"):
        try:
            results["shell"] = measure_shell(args, sizes, tmp)
        except TimeLimit as e:
            results["shell"] = {"status": "timed out", "detail": str(e)}
        except Exception as e:
            results["shell"] = {"status": "error", "detail": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()}
            log(traceback.format_exc())
    if args.only not in (None, "claims"):
        return
    from balsam_futures.backends import open_store

    results["claims"] = {}

    def sqlite_fresh(name: str):
        path = os.path.join(tmp, f"{name}.db")
        return open_store(f"sqlite:///{path}", listen="tasks"), path

    backends = [(SQLITE, sqlite_fresh)]
    server = None
    if args.postgres:
        results["server"] = {"status": "starting"}
        try:
            server = PgServer(tmp)
            server.start()
            results["server"] = {**server.info, "status": "ok"}
            pg = server.pg
            backends.append((PG, lambda name: (open_store(pg.create_database(name),
                                                          listen="tasks"), None)))
        except Exception as e:
            results["server"] = {"status": f"start-up failed: {type(e).__name__}: {e}"}
            log(f"[server] {results['server']['status']}")
    try:
        for backend, fresh in backends:
            results["claims"][backend] = measure_claims(backend, fresh, args)
    finally:
        if server is not None:
            server.stop()


def main(argv=None) -> int:
    args, sizes = parse_args(argv)
    bx.setup_import_paths()
    machine = bx.machine_info()
    machine["sqlalchemy"] = bx.dist_version("sqlalchemy")
    machine["psycopg2"] = bx.dist_version("psycopg2") or bx.dist_version("psycopg2-binary")
    try:
        machine["balsam"] = bx.probe_balsam()
    except Exception as e:
        machine["balsam"] = f"import failed: {e!r}"
    tmp = bx.make_temp_dir("bench-launcher-")
    os.chmod(tmp, 0o711)  # the PostgreSQL server's user (as root: postgres) must enter it
    results: dict[str, Any] = {}
    started = time.time()
    code = 0
    try:
        run(args, sizes, results, tmp)
    except KeyboardInterrupt:
        log("\ninterrupted: report so far follows")
        code = 130
    finally:
        bx.remove_temp_dir(tmp)
    print(render_report(args, machine, results))
    if args.json:
        data = {"machine": machine, "quick": args.quick, "sizes": sizes,
                "backlogs": args.backlogs, "duration_s": time.time() - started, **results}
        Path(args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"raw numbers written to {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
