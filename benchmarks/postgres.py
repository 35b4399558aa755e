#!/usr/bin/env python
"""Benchmark BalsamExecutor on PostgreSQL: a throwaway private server, SQLite for context.

    python benchmarks/postgres.py [--quick] [--json FILE] [--time-limit SECONDS]

A private PostgreSQL server (``balsam_futures.backends.pgserver.LocalPostgres``: initdb + pg_ctl,
Unix socket only) is started in a fresh temporary directory, a fresh database is created on it for
every measurement, and at the end the server is stopped and the directory removed, also after an
error or Ctrl-C. Run as root, the server runs as the user ``postgres``.

Measurements (``--quick`` divides the counts by 5):

1. bulk submit: how long ``ex.map(noop, range(20_000))`` takes to return on an executor without a
   launcher (``launcher=False``), i.e. storing every task in the database and nothing else;
   tasks/s. PostgreSQL, then SQLite (the embedded default) for context.
2. round trip: 300 sequential ``ex.submit(noop, i).result()`` with the executor's own launcher
   (``max_workers=2``), after a warm-up; p50 and p95. PostgreSQL, then SQLite.
3. launcher scaling: 1, 2 and 4 separate launcher processes (``python -m balsam_futures launcher
   --workers 1``) on one database; an executor without a launcher submits 5,000 no-ops one at a
   time and waits for all results; tasks/s, and the ratio to 1 launcher. Report only.

Each measurement has a time limit (``--time-limit``, default 120 s) and shows "timed out" past it;
helpers (time limits, watchdog, workloads, percentiles) come from ``executors.py``. The benchmark
never asserts: it reports.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import executors as bx  # noqa: E402  (the harness next to this file)
from executors import (  # noqa: E402
    Flagged,
    Handle,
    Hung,
    Watchdog,
    WorkloadTimeout,
    log,
    now,
    remaining,
    wait_all,
    yes_no,
)

MAX_WORKERS = 2  # the executor's own launcher, measurement 2
LAUNCHER_COUNTS = (1, 2, 4)  # measurement 3, each launcher with --workers 1
LAUNCHER_IDLE_TIMEOUT_S = 60.0  # a safety net: launchers stop by themselves if left behind
LAUNCHER_STOP_S = 30.0  # SIGTERM, then this long before SIGKILL
MAP_WARMUP = 100  # untimed map() before the timed one (connections, statements, code paths)
ROUNDTRIP_WARMUP = 20  # untimed round trips after the first task
TEARDOWN_MIN_S = 60.0  # time limit for a measurement's clean-up, at least

FULL_SIZES = {"map": 20_000, "roundtrip": 300, "scaling": 5_000}
QUICK_SIZES = {"map": 4_000, "roundtrip": 60, "scaling": 1_000}

TARGET_MAP_RATE = 20_000.0
TARGET_P50_MS = {"postgresql": 3.0, "sqlite": 5.0}

PG, SQLITE = "postgresql", "sqlite"
TITLES = {PG: "PostgreSQL", SQLITE: "SQLite"}
SHORT = {PG: "pg", SQLITE: "sqlite"}  # in measurement keys: map_pg, rt_sqlite, ...


# --------------------------------------------------------------------------------------------
# machine


def mount_of(path: str) -> str | None:
    """The filesystem type and mount point holding ``path`` (Linux), e.g. "overlay on /"."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = None
    for mnt, fstype in mounts:
        mnt = mnt.replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and (best is None or len(mnt) >= len(best[0])):
            best = (mnt, fstype)
    return None if best is None else f"{best[1]} on {best[0]}"


def postgres_binary_version() -> str:
    try:
        from balsam_futures.backends.pgserver import find_binary

        out = subprocess.run(
            [find_binary("postgres"), "--version"], capture_output=True, text=True, timeout=30
        )
        return (out.stdout or out.stderr).strip() or f"exit {out.returncode}"
    except Exception as e:
        return f"unknown ({type(e).__name__}: {e})"


def server_settings(url: str) -> dict[str, str]:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        out = {}
        with conn.cursor() as cur:
            for name in (
                "server_version",
                "fsync",
                "synchronous_commit",
                "wal_sync_method",
                "shared_buffers",
                "max_connections",
            ):
                cur.execute(f"SHOW {name}")
                out[name] = cur.fetchone()[0]
        return out
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# measurements


@dataclass
class Measurement:
    key: str
    backend: str
    # run(stack, deadline, state): clean-ups go on ``stack``; ``state`` collects what they
    # find (merged into the record after the stack closes, even when the run failed)
    run: Callable[[contextlib.ExitStack, float, dict[str, Any]], dict[str, Any]]


class Bench:
    def __init__(self, args, sizes):
        self.args = args
        self.sizes = sizes
        self.limit = args.time_limit
        self.machine = bx.machine_info()
        self.machine["postgres_binary"] = postgres_binary_version()
        self.machine["psycopg2"] = bx.dist_version("psycopg2") or bx.dist_version("psycopg2-binary")
        self.machine["sqlalchemy"] = bx.dist_version("sqlalchemy")
        self.watchdog = Watchdog(self.give_up)
        self.wl = importlib.import_module("workloads")
        self.started = time.time()
        self.results: dict[str, dict[str, Any]] = {}
        self.server: dict[str, Any] = {"status": "not started"}
        self.pg = None  # LocalPostgres, once created
        self.pg_url: str | None = None
        self.tmp: str | None = None
        self.launchers: list[subprocess.Popen] = []  # live launcher processes, for clean-up
        self.current: str | None = None
        self._reported = False
        try:
            self.balsam_version = bx.probe_balsam()
        except Exception as e:
            self.balsam_version = f"import failed: {e!r}"

    # -- server ---------------------------------------------------------------------------

    def start_server(self) -> None:
        from balsam_futures.backends.pgserver import LocalPostgres

        self.tmp = bx.make_temp_dir("bench-postgres-")
        os.chmod(self.tmp, 0o711)  # the server's user (as root: postgres) must enter it
        self.machine["tmp_filesystem"] = mount_of(self.tmp)
        run_as = "postgres" if os.geteuid() == 0 else None
        self.pg = LocalPostgres(os.path.join(self.tmp, "pg"), run_as=run_as)
        self.server.update(path=str(self.pg.path), run_as=run_as)
        log(f"[server] starting PostgreSQL in {self.pg.path} (run as {run_as or 'this user'}) ...")
        t0 = now()
        try:
            with self.watchdog.guard(self.limit, "server start-up"):
                self.pg_url = self.pg.start()
                self.server["startup_s"] = now() - t0
                self.server.update(server_settings(self.pg_url))
        except (Exception, Hung) as e:
            if isinstance(e, Hung):
                kind, detail = "timed out", f"not up within {self.limit:g} s"
            else:
                kind, detail = "failed", f"{type(e).__name__}: {e}"
            self.server.update(status=f"start-up {kind}", detail=detail)
            self.pg_url = None
            log(f"[server] start-up {kind}: {e!r}")
            return
        self.server["status"] = "ok"
        log(
            f"[server] PostgreSQL {self.server.get('server_version')} up in "
            f"{self.server['startup_s']:.2f} s"
        )

    def stop_server(self) -> None:
        """Stop the server (fast, then immediate) and remove the temporary directory; the
        directory stays if the server would not stop."""
        stopped = True
        if self.pg is not None:
            t0 = now()
            try:
                self.pg.stop()
            except Exception as e:
                log(f"[server] pg_ctl stop -m fast failed: {e!r}; trying -m immediate")
                try:
                    self.pg.stop("immediate")
                except Exception as e2:
                    stopped = False
                    log(f"[server] could not stop the server: {e2!r}; left in {self.pg.path}")
            self.server["shutdown_s"] = now() - t0
            self.pg = None
        if self.tmp is not None and stopped:
            bx.remove_temp_dir(self.tmp)
            self.tmp = None

    def new_database(self, name: str) -> str:
        assert self.pg is not None
        return self.pg.create_database(name)

    # -- executors and launchers ----------------------------------------------------------

    def executor(
        self,
        stack: contextlib.ExitStack,
        backend: str,
        name: str,
        *,
        launcher: bool,
        state: dict[str, Any],
    ):
        """A BalsamExecutor on a fresh database (PostgreSQL) or site (SQLite); shut down when
        ``stack`` closes (pending tasks cancelled; waits unless it has no launcher and the
        measurement failed, when nothing may be left to finish its claimed tasks)."""
        from balsam_futures import BalsamExecutor

        assert self.tmp is not None
        site = os.path.join(self.tmp, f"site-{name}")
        db_url = self.new_database(name) if backend == PG else None
        t0 = now()
        ex = BalsamExecutor(max_workers=MAX_WORKERS, site=site, db_url=db_url, launcher=launcher)
        state["executor_startup_s"] = now() - t0

        def close() -> None:
            wait = launcher or state.get("ok", False)
            ex.shutdown(wait=wait, cancel_futures=True)

        stack.callback(close)
        return ex, db_url, site

    def start_launchers(
        self, stack: contextlib.ExitStack, k: int, db_url: str, site: str, state: dict[str, Any]
    ) -> list[subprocess.Popen]:
        assert self.tmp is not None
        procs: list[subprocess.Popen] = []
        logs: list[str] = []
        stack.callback(self.stop_launchers, procs, logs, state)
        argv = [
            sys.executable,
            "-m",
            "balsam_futures",
            "launcher",
            "--db-url",
            db_url,
            "--site",
            site,
            "--workers",
            "1",
            "--idle-timeout",
            f"{LAUNCHER_IDLE_TIMEOUT_S:g}",
        ]
        for i in range(k):
            path = os.path.join(self.tmp, f"launchers-{k}-{i}.out")
            with open(path, "wb") as out:
                # Own session: a Ctrl-C for the benchmark does not reach it; we stop it.
                p = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=os.environ.copy(),
                )
            procs.append(p)
            logs.append(path)
            self.launchers.append(p)
        return procs

    def stop_launchers(
        self, procs: list[subprocess.Popen], logs: list[str], state: dict[str, Any]
    ) -> None:
        """SIGTERM each launcher, wait; SIGKILL its process group after LAUNCHER_STOP_S."""
        t0 = now()
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        end = now() + LAUNCHER_STOP_S
        codes, finished, killed = [], [], 0
        for p, path in zip(procs, logs):
            try:
                codes.append(p.wait(timeout=remaining(end)))
            except subprocess.TimeoutExpired:
                killed += 1
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                codes.append(p.wait())
            with contextlib.suppress(ValueError):
                self.launchers.remove(p)
            text = Path(path).read_text(errors="replace") if os.path.exists(path) else ""
            m = re.search(r"launcher finished (\d+) task", text)
            finished.append(int(m.group(1)) if m else None)
            if p.returncode not in (0, None) or m is None:
                state.setdefault("launcher_output_tails", []).append(text[-1500:])
        state.update(
            launchers_stop_s=now() - t0,
            launcher_exit_codes=codes,
            launcher_tasks_finished=finished,
            launchers_killed=killed,
        )

    def kill_launchers(self) -> None:
        """Last resort (give-up, exit): SIGKILL every launcher still alive, with its workers."""
        for p in list(self.launchers):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=10)
        self.launchers.clear()

    # -- the measurements -----------------------------------------------------------------

    def m_map(self, backend: str):
        def run(stack: contextlib.ExitStack, deadline: float, state: dict[str, Any]):
            n = self.sizes["map"]
            ex, _, _ = self.executor(stack, backend, f"map_{backend}", launcher=False, state=state)
            ex.map(self.wl.noop, range(MAP_WARMUP))  # untimed; nothing runs: no launcher
            if now() > deadline:
                raise WorkloadTimeout("warm-up map() took the whole time limit")
            t0 = now()
            ex.map(self.wl.noop, range(n))  # returns once every task is in the store
            call_s = now() - t0
            stored = sum(ex.store.count_by_state().values())  # check: all there
            state["ok"] = True
            rec = {
                "n": n,
                "call_s": call_s,
                "call_rate": n / call_s,
                "warmup_tasks": MAP_WARMUP,
                "tasks_in_store": stored,
            }
            if call_s > self.limit:
                raise WorkloadTimeout(f"map() took {call_s:.1f} s", rec)
            return rec

        return run

    def m_roundtrip(self, backend: str):
        def run(stack: contextlib.ExitStack, deadline: float, state: dict[str, Any]):
            n = self.sizes["roundtrip"]
            ex, _, _ = self.executor(stack, backend, f"rt_{backend}", launcher=True, state=state)
            t0 = now()
            ex.submit(self.wl.noop, -1).result(timeout=remaining(deadline))
            first = now() - t0
            for i in range(ROUNDTRIP_WARMUP):
                ex.submit(self.wl.noop, i).result(timeout=remaining(deadline))
            h = Handle(ex.submit, ex.map, lambda wait, cancel: None)
            rec = bx.wl_roundtrip(h, self.wl, n, now() + self.limit)
            state["ok"] = True
            rec.update(first_task_s=first, warmup_roundtrips=ROUNDTRIP_WARMUP)
            return rec

        return run

    def warm_up_launchers(self, ex, procs: list[subprocess.Popen], deadline: float):
        """Run rounds of no-ops until every launcher has finished one (so each is up, its
        worker started), or the deadline passes. Returns (launchers seen, tasks, seconds)."""
        k = len(procs)
        seen: set[int] = set()
        tasks = 0
        t0 = now()
        while len(seen) < k:
            dead = [p.pid for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"launcher process(es) {dead} exited during warm-up")
            if now() > deadline:
                break
            futs = [ex.submit(self.wl.noop, -1) for _ in range(2 * k)]
            tasks += len(futs)
            try:
                wait_all(futs, deadline)
            except WorkloadTimeout as e:
                raise WorkloadTimeout(f"launcher warm-up: {e.args[0]}") from None
            rows = ex.store.get_tasks([f.task_id for f in futs])
            seen |= {r["launcher_id"] for r in rows if r.get("launcher_id") is not None}
        return seen, tasks, now() - t0

    def m_scaling(self, k: int):
        def run(stack: contextlib.ExitStack, deadline: float, state: dict[str, Any]):
            n = self.sizes["scaling"]
            rec: dict[str, Any] = {"n": n, "launchers": k, "workers_per_launcher": 1}
            ex, db_url, site = self.executor(stack, PG, f"scale_{k}", launcher=False, state=state)
            assert db_url is not None
            t0 = now()
            procs = self.start_launchers(stack, k, db_url, site, state)
            seen, tasks, warm_s = self.warm_up_launchers(ex, procs, now() + self.limit)
            rec.update(
                launchers_up_s=now() - t0,
                warmup_tasks=tasks,
                warmup_s=warm_s,
                launchers_seen_in_warmup=len(seen),
            )
            if len(seen) < k:
                log(f"[scale_{k}] warm-up: only {len(seen)} of {k} launchers ran a task")
            h = Handle(ex.submit, ex.map, lambda wait, cancel: None)
            try:
                rec.update(bx.wl_throughput(h, self.wl, n, now() + self.limit))
            except WorkloadTimeout as e:
                extra = e.args[1] if len(e.args) > 1 else {}
                raise WorkloadTimeout(e.args[0], {**rec, **extra}) from None
            state["ok"] = True
            return rec

        return run

    def measurements(self) -> list[Measurement]:
        out = [
            Measurement("map_pg", PG, self.m_map(PG)),
            Measurement("map_sqlite", SQLITE, self.m_map(SQLITE)),
            Measurement("rt_pg", PG, self.m_roundtrip(PG)),
            Measurement("rt_sqlite", SQLITE, self.m_roundtrip(SQLITE)),
        ]
        out += [Measurement(f"scale_{k}", PG, self.m_scaling(k)) for k in LAUNCHER_COUNTS]
        return out

    # -- running --------------------------------------------------------------------------

    def run_one(self, m: Measurement) -> None:
        if m.backend == PG and self.pg_url is None:
            self.results[m.key] = {"status": "no server"}  # the note on the server says why
            return
        log(f"[{m.key}] ...")
        self.current = m.key
        stack = contextlib.ExitStack()
        state: dict[str, Any] = {}
        rec: dict[str, Any] = {"status": "interrupted"}
        self.results[m.key] = rec
        t0 = now()
        try:
            try:
                with self.watchdog.guard(2 * self.limit + 15, m.key):
                    rec.update(status="ok", **m.run(stack, t0 + self.limit, state))
            except WorkloadTimeout as e:
                rec.update(status="timed out", detail=str(e.args[0]))
                if len(e.args) > 1:
                    rec.update(e.args[1])
            except Hung:
                rec.update(status="timed out", detail="a call blocked past the time limit")
            except (cf.TimeoutError, TimeoutError):  # a future's result(timeout=...)
                rec.update(status="timed out", detail="a task did not finish in time")
            except Exception as e:
                rec.update(
                    status="error",
                    detail=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc(),
                )
        finally:
            rec["elapsed_s"] = now() - t0
            self.current = None
            self.teardown(m.key, stack, rec)
            rec.update({k: v for k, v in state.items() if k != "ok"})
        log(
            f"[{m.key}] {rec['status']} in {rec['elapsed_s']:.2f} s"
            + (f" ({rec['detail']})" if rec.get("detail") else "")
        )

    def teardown(self, key: str, stack: contextlib.ExitStack, rec: dict[str, Any]) -> None:
        t0 = now()
        status = "ok"
        try:
            # After a timed-out run, cancelling can first have to store a long submit backlog.
            with self.watchdog.guard(max(self.limit, TEARDOWN_MIN_S), f"{key} shutdown"):
                stack.close()
        except Hung:
            status = "timed out"
        except Exception as e:
            status = f"error: {type(e).__name__}: {e}"
        rec["shutdown_s"] = now() - t0
        rec["shutdown_status"] = status
        if status != "ok":
            log(f"[{key}] shutdown {status}")
            self.kill_launchers()

    def run(self) -> None:
        self.start_server()
        for m in self.measurements():
            self.run_one(m)

    def cleanup(self) -> None:
        self.kill_launchers()
        # An executor whose shutdown did not finish (timed out) still polls its store: once the
        # server is stopped its retry warnings would only be noise.
        logging.getLogger("balsam_futures").setLevel(logging.CRITICAL)
        self.stop_server()

    def give_up(self, what: str) -> None:
        """Called from the watchdog thread when the main thread is stuck for good."""
        log(f"\n!! {what} is stuck past the time limit; printing the report so far and exiting.")
        if self.current is not None:
            self.results.setdefault(self.current, {}).update(
                status="timed out", detail="hung: the benchmark gave up here"
            )
        with contextlib.suppress(Exception):
            self.report()
        self.kill_launchers()
        bx.terminate_children()  # the executor's own launcher, if one is running
        with contextlib.suppress(Exception):
            self.stop_server()
        self.remove_temp_dirs()
        os._exit(3)

    def remove_temp_dirs(self) -> None:
        """Every temporary directory left, except one whose server would not stop."""
        for path in list(bx.TEMP_DIRS):
            if path != self.tmp:
                bx.remove_temp_dir(path)

    # -- report ---------------------------------------------------------------------------

    def report(self) -> None:
        if self._reported:
            return
        self._reported = True
        print(render_report(self))
        if self.args.json:
            data = {
                "machine": self.machine,
                "balsam_futures": self.balsam_version,
                "quick": self.args.quick,
                "sizes": self.sizes,
                "time_limit_s": self.limit,
                "max_workers": MAX_WORKERS,
                "launcher_counts": list(LAUNCHER_COUNTS),
                "started": self.started,
                "duration_s": time.time() - self.started,
                "server": self.server,
                "measurements": self.results,
                "table": [
                    {"metric": label, "value": value, "target": target, "met": met}
                    for label, value, _, target, met in table_rows(self)
                ],
            }
            Path(self.args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
            print(f"raw numbers written to {self.args.json}")
        sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# table


def figure(rec: dict[str, Any] | None, key: str) -> Any:
    """A number (Flagged if some tasks failed or came back wrong), a status string, or None."""
    if rec is None:
        return None
    if key in rec and rec.get("status") == "ok":
        bad = rec.get("failed", 0) or rec.get("wrong_results", 0)
        return Flagged(rec[key]) if bad else rec[key]
    return rec.get("status")


def table_rows(b: Bench) -> list[tuple[str, Any, Callable[[float], str], str, str]]:
    """(label, value, format, target, met) per row."""
    rate = "{:,.0f}".format
    ms = "{:.2f}".format
    r, s = b.results, b.sizes
    num = (int, float)
    rows: list[tuple[str, Any, Callable[[float], str], str, str]] = []

    def met(value, ok: Callable[[float], bool]) -> str:
        return yes_no(ok(value)) if isinstance(value, num) else "-"

    rows.append(
        (
            "server start-up: initdb + pg_ctl start (s)",
            b.server.get("startup_s") if b.server.get("status") == "ok" else b.server.get("status"),
            "{:.2f}".format,
            "-",
            "-",
        )
    )
    v = figure(r.get("map_pg"), "call_rate")
    rows.append(
        (
            f"1. map() of {s['map']:,} no-ops returns, PostgreSQL (tasks/s)",
            v,
            rate,
            f">= {TARGET_MAP_RATE:,.0f}/s",
            met(v, lambda x: x >= TARGET_MAP_RATE),
        )
    )
    rows.append(
        (
            "   same on SQLite (tasks/s)",
            figure(r.get("map_sqlite"), "call_rate"),
            rate,
            "context",
            "-",
        )
    )
    for i, backend in enumerate((PG, SQLITE)):
        rec = r.get(f"rt_{SHORT[backend]}")
        v = figure(rec, "p50_ms")
        target = TARGET_P50_MS[backend]
        lead = f"2. {s['roundtrip']:,} sequential submit().result()" if i == 0 else "  "
        rows.append(
            (
                f"{lead} p50, {TITLES[backend]} (ms)",
                v,
                ms,
                f"<= {target:g} ms",
                met(v, lambda x, t=target: x <= t),
            )
        )
        rows.append((f"   p95, {TITLES[backend]} (ms)", figure(rec, "p95_ms"), ms, "-", "-"))
    base = figure(r.get("scale_1"), "tasks_per_s")
    for k in LAUNCHER_COUNTS:
        lead = f"3. {s['scaling']:,} no-ops, " if k == LAUNCHER_COUNTS[0] else "   "
        plural = "launcher" if k == 1 else "launchers"
        rows.append(
            (
                f"{lead}{k} {plural} x 1 worker, PostgreSQL (tasks/s)",
                figure(r.get(f"scale_{k}"), "tasks_per_s"),
                rate,
                "report only",
                "-",
            )
        )
    for k in LAUNCHER_COUNTS[1:]:
        v = figure(r.get(f"scale_{k}"), "tasks_per_s")
        ratio = v / base if isinstance(v, num) and isinstance(base, num) and base else None
        rows.append(
            (f"   scaling: {k} launchers / 1 launcher", ratio, "{:.2f}x".format, "report only", "-")
        )
    return rows


def render_table(b: Bench) -> str:
    header = ["metric", "value", "target", "met"]
    lines = []
    for label, value, fmt, target, met in table_rows(b):
        if value is None:
            cell = "-"
        elif isinstance(value, (int, float)):
            cell = fmt(value) + ("*" if isinstance(value, Flagged) else "")
        else:
            cell = str(value)
        lines.append([label, cell, target, met])
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]

    def fmt_line(cells):
        return "  ".join(
            [
                cells[0].ljust(widths[0]),
                cells[1].rjust(widths[1]),
                cells[2].ljust(widths[2]),
                cells[3].ljust(widths[3]),
            ]
        ).rstrip()

    rule = "-" * len(fmt_line(["-" * w for w in widths]))
    return "\n".join([fmt_line(header), rule, *(fmt_line(c) for c in lines)])


def render_report(b: Bench) -> str:
    m, srv = b.machine, b.server
    out = [
        "",
        "=" * 78,
        "PostgreSQL benchmark" + ("  (--quick)" if b.args.quick else ""),
        "=" * 78,
        f"machine: nproc={m['nproc']} (os.cpu_count={m['os_cpu_count']}), {m['platform']}",
        f"python:  {m['implementation']} {m['python']} ({m['executable']}), "
        f"sqlite {m['sqlite']}, psycopg2 {m.get('psycopg2')}, sqlalchemy {m.get('sqlalchemy')}",
        f"postgres: {m['postgres_binary']}"
        + (f"; server {srv['server_version']}" if "server_version" in srv else ""),
    ]
    if "fsync" in srv:
        out.append(
            f"server settings: fsync={srv['fsync']}, synchronous_commit="
            f"{srv['synchronous_commit']}, wal_sync_method={srv['wal_sync_method']}, "
            f"shared_buffers={srv['shared_buffers']}; data in {m.get('tmp_filesystem')}"
        )
    if "loadavg_at_start" in m:
        out.append(bx.load_average_line(m))
    out.append(f"balsam_futures: {b.balsam_version}")
    out.append(
        f"time limit per measurement: {b.limit:g} s; round trips with max_workers={MAX_WORKERS}"
    )
    out += ["", render_table(b), ""]

    notes = []
    if srv.get("status") not in ("ok", None):
        notes.append(f"server: {srv.get('status')}: {srv.get('detail')}")
    for key, rec in b.results.items():
        if rec.get("detail"):
            notes.append(f"{key}: {rec['status']}: {rec['detail']}")
        if rec.get("failed") or rec.get("wrong_results"):
            notes.append(
                f"{key}: {rec.get('failed', 0)} task(s) failed, {rec.get('wrong_results', 0)} "
                f"wrong result(s); first error: {rec.get('first_error')}  (* in the table)"
            )
        if rec.get("shutdown_status") not in (None, "ok"):
            notes.append(f"{key}: shutdown {rec['shutdown_status']}")
    for backend in (PG, SQLITE):
        key = f"map_{SHORT[backend]}"
        rec = b.results.get(key, {})
        if "tasks_in_store" in rec:
            want = rec["n"] + rec["warmup_tasks"]
            if rec["tasks_in_store"] != want:
                notes.append(
                    f"{key}: {rec['tasks_in_store']} tasks in the store after map(), "
                    f"expected {want}"
                )
    scale_bits = []
    for k in LAUNCHER_COUNTS:
        rec = b.results.get(f"scale_{k}", {})
        if "submit_rate" in rec:
            scale_bits.append(f"{k}: {rec['submit_rate']:,.0f}/s")
        if rec.get("launchers_seen_in_warmup") is not None and rec["launchers_seen_in_warmup"] < k:
            notes.append(
                f"scale_{k}: after warm-up only {rec['launchers_seen_in_warmup']} of {k} "
                "launchers had run a task"
            )
        if rec.get("launcher_tasks_finished"):
            notes.append(
                f"scale_{k}: tasks finished per launcher (warm-up included): "
                f"{rec['launcher_tasks_finished']}, exit codes {rec.get('launcher_exit_codes')}"
                + (f", {rec['launchers_killed']} SIGKILLed" if rec.get("launchers_killed") else "")
            )
    if scale_bits:
        notes.append("measurement 3, rate of the submit() calls alone: " + ", ".join(scale_bits))
    if m["nproc"] <= max(LAUNCHER_COUNTS) + 1:
        notes.append(
            f"only {m['nproc']} CPUs: the driver, the PostgreSQL server, launchers and workers "
            "share them, so every figure (and launcher scaling above all) is contention-bound."
        )
    notes.append(
        "1: launcher=False, so map() only stores tasks; 3: fresh database per launcher count, "
        "executor with launcher=False, launchers started with `python -m balsam_futures "
        "launcher --workers 1` and warmed up before timing."
    )
    out.append("notes:")
    out += [f"  - {n}" for n in notes]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="counts divided by ~5 (smoke run)")
    ap.add_argument("--json", metavar="FILE", help="write all raw numbers to FILE")
    ap.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        metavar="S",
        help="time limit per measurement, its set-up, and server start-up (default %(default)s s)",
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    bx.setup_import_paths()  # workloads importable here, in launchers and in their workers
    bench = Bench(args, QUICK_SIZES if args.quick else FULL_SIZES)
    code = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        log("\ninterrupted: stopping launchers and the server; report so far follows")
        code = 130
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            bench.cleanup()
    bench.report()
    bench.remove_temp_dirs()
    return code


if __name__ == "__main__":
    sys.exit(main())
