#!/usr/bin/env python
"""Benchmark BalsamExecutor against other concurrent.futures-style executors.

    python benchmarks/executors.py [--quick] [--json FILE] [--peers balsam,ppe,dask,parsl]
                                   [--time-limit SECONDS] [--no-postgres]

Peers, each with 2 workers, run one after another in this one process, on the same workloads:

* ``balsam``: ``balsam_futures.BalsamExecutor(max_workers=2, site=<fresh temporary directory>)``
* ``ppe``:    ``concurrent.futures.ProcessPoolExecutor(max_workers=2)``
* ``dask``:   ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
              + ``Client(...).get_executor(pure=False)``
* ``parsl``:  ``HighThroughputExecutor(max_workers_per_node=2)`` on a ``LocalProvider``, tasks
              submitted through a ``python_app`` (the way Parsl is normally used)

A peer that does not import is reported as "not installed" and skipped. Every peer is created and
warmed up (one task run to completion) before anything is timed; creation and warm-up times are
reported on their own rows.

Workloads (``--quick`` divides the counts by 5):

1. no-op throughput: 5,000 ``submit(noop, i)`` one at a time, then wait for all; tasks/s.
2. round trip: 300 sequential ``submit(noop, i).result()``; p50 and p95 latency. For Balsam
   also on PostgreSQL, when its server programs and ``psycopg2`` are there: a throwaway server
   (``balsam_futures.backends.pgserver.LocalPostgres`` in a temporary directory; run as root,
   as the user ``postgres``), a fresh ``BalsamExecutor(max_workers=2, db_url=...)``, one task
   and 20 untimed round trips first; skipped with a note otherwise (or with ``--no-postgres``).
3. 2,000 x ``time.sleep(0.01)`` on 2 workers: efficiency = ideal (N * 0.01 s / 2) / wall time.
4. ``as_completed`` over 2,000 ``sleep_task(d)``, d drawn from U(0, 20 ms) with a fixed seed
   (the same durations for every peer): wall time until the last future is yielded; the
   Balsam/PPE ratio of the wall times.
5. shell tasks: 3,000 ``/bin/true``, submitted one at a time, then wait for all (after 20
   untimed): ``ShellApp("/bin/true")`` on Balsam, ``subprocess.run(["/bin/true"])`` in a task
   function on the other peers; tasks/s.
6. bulk ``map(noop, range(20_000))``: how long the ``map`` call takes to return (BalsamExecutor
   persists every task in one bulk insert before returning); then the results are consumed.

Start-up is reported as the constructor's time, the first task's (warm-up) and their sum: ready
to run. At the end Balsam's store is counted against the tasks submitted to it (every task is
persisted with its history).

Each workload has a time limit (``--time-limit``, default 120 s). A workload that runs over it is
reported as "timed out", the peer is shut down and started afresh for its next workload. A call
that blocks and ignores the limit is interrupted by a watchdog; if even that fails, the report so
far is printed and the process exits. The benchmark never asserts: it reports.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import importlib
import importlib.util
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MAX_WORKERS = 2
SLEEP_S = 0.01
HARD_GRACE_S = 45.0  # after the soft watchdog fires, how long before the process gives up

RANDOM_SLEEP_MAX_S = 0.02  # workload 4: durations from U(0, RANDOM_SLEEP_MAX_S)
RANDOM_SEED = 20_000  # the same durations for every peer, in every run
SHELL_ARGV = ["/bin/true"]  # workload 5
SHELL_WARMUP = 20  # untimed shell tasks before the timed ones
PG_ROUNDTRIP_WARMUP = 20  # untimed round trips on PostgreSQL after the first task
# No-op throughput once more, Balsam and PPE both started, in rounds that alternate between
# them (B P, P B, ...): on a machine whose speed drifts within a run, the per-peer row
# compares two moments a minute apart; these rounds compare neighbours, and give a spread.
ALTERNATING_ROUNDS = 6
ALTERNATING_WARMUP = 200  # untimed no-ops per peer before the rounds

FULL_SIZES = {
    "throughput": 5_000,
    "roundtrip": 300,
    "sleep": 2_000,
    "as_completed": 2_000,
    "shell": 3_000,
    "map": 20_000,
}
QUICK_SIZES = {
    "throughput": 1_000,
    "roundtrip": 60,
    "sleep": 400,
    "as_completed": 400,
    "shell": 600,
    "map": 4_000,
}

# Targets for Balsam (goal, and the floor where there is one)
T_READY_S = 0.3  # constructor + first no-op result
T_THROUGHPUT = (1.0, 0.8)  # x ProcessPoolExecutor
T_RT_P50_MS = {"sqlite": (1.0, 1.5), "postgresql": (2.5, 3.0)}
T_SLEEP_EFF_PCT = 96.0
T_AS_COMPLETED = 1.03  # Balsam wall time / PPE's: within 3 %
T_SHELL_RATE = 1_500.0
T_MAP_RATE = 20_000.0

now = time.perf_counter
TEMP_DIRS: set[str] = set()  # removed on every exit path, even a forced one


def make_temp_dir(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    TEMP_DIRS.add(path)
    return path


def remove_temp_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    TEMP_DIRS.discard(path)


# --------------------------------------------------------------------------------------------
# environment


def setup_import_paths() -> None:
    """Make ``workloads`` (and, for an uninstalled checkout, ``balsam_futures``) importable here
    and in every child process, whatever way the executor starts its workers."""
    extra = [str(BENCH_DIR)]
    if (
        importlib.util.find_spec("balsam_futures") is None
        and (REPO_ROOT / "balsam_futures").is_dir()
    ):
        extra.append(str(REPO_ROOT))  # running from a checkout that is not pip-installed
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)
    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(extra + [p for p in old if p not in extra])
    # Parsl (and any launcher that execs a console script) looks executables up on PATH: make
    # the running interpreter's bin directory come first, as activating the virtualenv would.
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bindir]:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in path if p != bindir])


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    import multiprocessing

    info = {
        "nproc": cpu_count(),
        "os_cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "sqlite": sqlite3.sqlite_version,
        "mp_start_method": multiprocessing.get_start_method(allow_none=False),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# peers: each is a probe (import it, return a version string) and a factory (start one)


@dataclass
class Handle:
    """A started executor, seen through the calls the workloads make."""

    submit: Callable[..., Any]
    map: Callable[..., Any]
    close: Callable[[bool, bool], None]  # close(wait, cancel_futures)
    # workload 5: (fn, args) to submit, and whether its result means the command succeeded;
    # None: ``workloads.run_command(SHELL_ARGV)``, which returns the exit code
    shell: tuple[Callable[..., Any], tuple, Callable[[Any], bool]] | None = None
    # Balsam: what its store holds (task count by state, a task's history)
    inspect: Callable[[int | None], dict[str, Any]] | None = None


def _shutdown(ex, wait: bool, cancel: bool) -> None:
    try:
        ex.shutdown(wait=wait, cancel_futures=cancel)
    except TypeError:  # an executor without cancel_futures
        ex.shutdown(wait=wait)


def probe_balsam() -> str:
    import balsam_futures
    from balsam_futures import BalsamExecutor  # noqa: F401

    version = dist_version("balsam_futures") or getattr(balsam_futures, "__version__", "?")
    return f"{version} ({Path(balsam_futures.__file__).parent})"


def make_balsam() -> Handle:
    from balsam_futures import BalsamExecutor, ShellApp

    tmp = make_temp_dir("bench-balsam-")
    try:
        ex = BalsamExecutor(max_workers=MAX_WORKERS, site=os.path.join(tmp, "site"))
    except BaseException:
        remove_temp_dir(tmp)
        raise

    def close(wait: bool, cancel: bool) -> None:
        try:
            _shutdown(ex, wait, cancel)
        finally:
            remove_temp_dir(tmp)

    def inspect(sample_id: int | None) -> dict[str, Any]:
        by_state = ex.store.count_by_state()
        out: dict[str, Any] = {"tasks_by_state": by_state, "tasks_in_store": sum(by_state.values())}
        if sample_id is not None:
            out["sample_task_id"] = sample_id
            hist = ex.store.history(sample_id)
            states = [h["to_state"] for h in hist]
            if hist and hist[0].get("from_state"):
                states.insert(0, hist[0]["from_state"])
            out["sample_history"] = states
        return out

    app = ShellApp(" ".join(SHELL_ARGV))
    shell = (app, (), lambda res: getattr(res, "return_code", None) == 0)
    return Handle(ex.submit, ex.map, close, shell=shell, inspect=inspect)


def probe_ppe() -> str:
    import multiprocessing

    method = multiprocessing.get_start_method()
    return f"stdlib, Python {sys.version.split()[0]}, start method {method}"


def make_ppe() -> Handle:
    ex = cf.ProcessPoolExecutor(max_workers=MAX_WORKERS)
    return Handle(ex.submit, ex.map, lambda wait, cancel: _shutdown(ex, wait, cancel))


def probe_dask() -> str:
    import dask
    import distributed

    return f"dask {dask.__version__}, distributed {distributed.__version__}"


def make_dask() -> Handle:
    from distributed import Client, LocalCluster

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scratch = make_temp_dir("bench-dask-")
    try:
        cluster = LocalCluster(
            n_workers=MAX_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            local_directory=scratch,
        )
    except BaseException:
        remove_temp_dir(scratch)
        raise
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        remove_temp_dir(scratch)
        raise
    # pure=False: otherwise identical calls share a key and dask runs them once.
    ex = client.get_executor(pure=False)

    def close(wait: bool, cancel: bool) -> None:
        try:
            ex.shutdown(wait=wait and not cancel)
        finally:
            try:
                client.close()
            finally:
                cluster.close()
                remove_temp_dir(scratch)

    return Handle(ex.submit, ex.map, close)


def probe_parsl() -> str:
    import parsl
    from parsl.executors import HighThroughputExecutor  # noqa: F401
    from parsl.providers import LocalProvider  # noqa: F401

    return f"parsl {parsl.__version__}"


def make_parsl() -> Handle:
    from parsl.app.app import python_app
    from parsl.config import Config
    from parsl.dataflow.dflow import DataFlowKernel
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    logging.getLogger("parsl").setLevel(logging.WARNING)
    run_dir = make_temp_dir("bench-parsl-")
    label = "htex_bench"
    provider = LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1)
    common = dict(
        label=label,
        cores_per_worker=1,
        address="127.0.0.1",
        provider=provider,
        worker_logdir_root=run_dir,
    )
    try:
        try:
            htex = HighThroughputExecutor(max_workers_per_node=MAX_WORKERS, **common)
        except TypeError:  # Parsl before 2024 called it max_workers
            htex = HighThroughputExecutor(max_workers=MAX_WORKERS, **common)
        config = Config(
            executors=[htex], run_dir=run_dir, strategy="none", initialize_logging=False
        )
        dfk = DataFlowKernel(config)
    except BaseException:
        remove_temp_dir(run_dir)
        raise

    apps: dict[Callable, Callable] = {}

    def submit(fn, *args, **kwargs):
        app = apps.get(fn)
        if app is None:
            app = apps[fn] = python_app(fn, data_flow_kernel=dfk, executors=[label])
        return app(*args, **kwargs)

    def map_(fn, *iterables, timeout=None, chunksize=1):
        end = None if timeout is None else time.monotonic() + timeout
        futures = [submit(fn, *args) for args in zip(*iterables, strict=False)]

        def results():
            for f in futures:
                yield f.result(None if end is None else max(0.0, end - time.monotonic()))

        return results()

    def close(wait: bool, cancel: bool) -> None:
        try:
            dfk.cleanup()
        finally:
            remove_temp_dir(run_dir)

    return Handle(submit, map_, close)


@dataclass
class PeerSpec:
    key: str
    title: str
    probe: Callable[[], str]
    factory: Callable[[], Handle]


PEERS = [
    PeerSpec("balsam", "Balsam", probe_balsam, make_balsam),
    PeerSpec("ppe", "PPE", probe_ppe, make_ppe),
    PeerSpec("dask", "Dask", probe_dask, make_dask),
    PeerSpec("parsl", "Parsl", probe_parsl, make_parsl),
]


# --------------------------------------------------------------------------------------------
# time limits


class WorkloadTimeout(Exception):
    """A workload ran past its deadline (checked between calls)."""


class Hung(BaseException):
    """Raised in the main thread by the watchdog when a single call blocks past the deadline."""


class Watchdog:
    """Interrupts the main thread (SIGUSR1 -> ``Hung``) ``grace`` seconds after a deadline, and,
    if that does not help, prints what it has and exits the process."""

    def __init__(self, on_give_up: Callable[[str], None]):
        self._on_give_up = on_give_up
        self._lock = threading.Lock()
        self._active: object | None = None
        self._fired: object | None = None
        self._usable = hasattr(signal, "pthread_kill") and hasattr(signal, "SIGUSR1")
        if self._usable:
            signal.signal(signal.SIGUSR1, self._handler)

    def _handler(self, signum, frame):
        # Runs in the main thread, so it is serialised with the ``finally`` in guard().
        if self._fired is not None and self._fired is self._active:
            self._fired = None
            raise Hung()

    def _soft(self, token):
        with self._lock:
            if self._active is token:
                self._fired = token
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def _hard(self, token, what):
        with self._lock:
            if self._active is not token:
                return
        self._on_give_up(what)

    def _alarm(self, signum, frame):
        if self._active is not None:
            self._active = None
            raise Hung()

    @contextlib.contextmanager
    def guard(self, seconds: float, what: str, threads: bool = True):
        """``threads=False``: no timer thread, only SIGALRM (interrupts Python code, not a
        call stuck in C): for start-up, since a master with a thread running starts its
        launcher otherwise than a user's one-thread script does (balsam_futures forks it
        only from a one-thread process)."""
        token = object()
        if not threads and hasattr(signal, "setitimer"):
            previous = signal.signal(signal.SIGALRM, self._alarm)
            self._active = token
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._active = None
                signal.signal(signal.SIGALRM, previous)
            return
        timers = [threading.Timer(seconds + HARD_GRACE_S, self._hard, (token, what))]
        if self._usable:
            timers.append(threading.Timer(seconds, self._soft, (token,)))
        for t in timers:
            t.daemon = True
        self._active = token
        for t in timers:
            t.start()
        try:
            yield
        finally:
            with self._lock:
                self._active = None
            for t in timers:
                t.cancel()


def remaining(deadline: float) -> float:
    return max(0.0, deadline - now())


def wait_all(futures: list, deadline: float) -> None:
    """Wait until every future is done, or raise WorkloadTimeout at the deadline. Works for any
    future-like object with ``exception(timeout)``."""
    for i, f in enumerate(futures):
        try:
            f.exception(timeout=remaining(deadline))
        except (cf.TimeoutError, TimeoutError):
            left = sum(1 for g in futures[i:] if not g.done())
            raise WorkloadTimeout(f"{left} of {len(futures)} tasks unfinished") from None
        except cf.CancelledError:
            pass


def check_results(futures: list, expected) -> dict[str, Any]:
    failed, wrong, first = 0, 0, None
    for f, want in zip(futures, expected, strict=True):
        if f.cancelled():
            failed += 1
            first = first or "cancelled"
            continue
        exc = f.exception(timeout=0)
        if exc is not None:
            failed += 1
            first = first or repr(exc)
        elif f.result() != want:
            wrong += 1
    return {"failed": failed, "wrong_results": wrong, "first_error": first}


# --------------------------------------------------------------------------------------------
# workloads: each returns a dict of raw numbers, or raises WorkloadTimeout / another exception


def wl_throughput(h: Handle, wl, n: int, deadline: float) -> dict[str, Any]:
    submit, fn = h.submit, wl.noop
    futures = []
    t0 = now()
    for i in range(n):
        futures.append(submit(fn, i))
        if not i & 127 and now() > deadline:
            raise WorkloadTimeout(f"only {i + 1} of {n} submitted")
    t_submitted = now()
    wait_all(futures, deadline)
    t1 = now()
    return {
        "n": n,
        "submit_s": t_submitted - t0,
        "wall_s": t1 - t0,
        "submit_rate": n / (t_submitted - t0),
        "tasks_per_s": n / (t1 - t0),
        **check_results(futures, range(n)),
    }


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q / 100 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def wl_roundtrip(h: Handle, wl, n: int, deadline: float) -> dict[str, Any]:
    submit, fn = h.submit, wl.noop
    lat: list[float] = []
    wrong = 0
    for i in range(n):
        t = now()
        try:
            r = submit(fn, i).result(timeout=remaining(deadline))
        except (cf.TimeoutError, TimeoutError):
            raise WorkloadTimeout(f"only {i} of {n} round trips done") from None
        lat.append(now() - t)
        wrong += r != i
    s = sorted(lat)
    return {
        "n": n,
        "p50_ms": percentile(s, 50) * 1e3,
        "p95_ms": percentile(s, 95) * 1e3,
        "mean_ms": statistics.fmean(s) * 1e3,
        "min_ms": s[0] * 1e3,
        "max_ms": s[-1] * 1e3,
        "wrong_results": wrong,
        "latencies_ms": [round(x * 1e3, 4) for x in lat],
    }


def wl_sleep(h: Handle, wl, n: int, deadline: float) -> dict[str, Any]:
    submit, fn = h.submit, wl.sleep_task
    futures = []
    t0 = now()
    for i in range(n):
        futures.append(submit(fn, SLEEP_S))
        if not i & 127 and now() > deadline:
            raise WorkloadTimeout(f"only {i + 1} of {n} submitted")
    wait_all(futures, deadline)
    wall = now() - t0
    ideal = n * SLEEP_S / MAX_WORKERS
    return {
        "n": n,
        "sleep_s": SLEEP_S,
        "ideal_s": ideal,
        "wall_s": wall,
        "efficiency_pct": 100 * ideal / wall,
        **check_results(futures, [SLEEP_S] * n),
    }


def random_sleeps(n: int) -> list[float]:
    """The durations of workload 4: the same for every peer (a fixed seed)."""
    rng = random.Random(RANDOM_SEED)
    return [rng.uniform(0.0, RANDOM_SLEEP_MAX_S) for _ in range(n)]


def wl_as_completed(h: Handle, wl, n: int, deadline: float) -> dict[str, Any]:
    submit, fn = h.submit, wl.sleep_task
    durations = random_sleeps(n)
    futures = []
    t0 = now()
    for i, d in enumerate(durations):
        futures.append(submit(fn, d))
        if not i & 127 and now() > deadline:
            raise WorkloadTimeout(f"only {i + 1} of {n} submitted")
    t_submitted = now()
    seen = 0
    t_first = None
    try:
        for _ in cf.as_completed(futures, timeout=remaining(deadline)):
            seen += 1
            if t_first is None:
                t_first = now()
    except (cf.TimeoutError, TimeoutError):
        raise WorkloadTimeout(f"as_completed yielded {seen} of {n} futures in time") from None
    wall = now() - t0
    ideal = sum(durations) / MAX_WORKERS
    return {
        "n": n,
        "seed": RANDOM_SEED,
        "max_sleep_s": RANDOM_SLEEP_MAX_S,
        "sum_sleep_s": sum(durations),
        "ideal_s": ideal,
        "submit_s": t_submitted - t0,
        "first_yield_s": (t_first or now()) - t0,
        "wall_s": wall,
        "efficiency_pct": 100 * ideal / wall,
        **check_results(futures, durations),
    }


def wl_shell(h: Handle, wl, n: int, deadline: float) -> dict[str, Any]:
    if h.shell is not None:
        fn, args, ok = h.shell
    else:
        fn, args, ok = wl.run_command, (SHELL_ARGV,), (lambda res: res == 0)
    submit = h.submit
    warm = [submit(fn, *args) for _ in range(SHELL_WARMUP)]
    try:
        wait_all(warm, deadline)
    except WorkloadTimeout as e:
        raise WorkloadTimeout(f"warm-up: {e.args[0]}") from None
    futures = []
    t0 = now()
    for i in range(n):
        futures.append(submit(fn, *args))
        if not i & 127 and now() > deadline:
            raise WorkloadTimeout(f"only {i + 1} of {n} submitted")
    t_submitted = now()
    wait_all(futures, deadline)
    t1 = now()
    failed, wrong, first = 0, 0, None
    for f in futures:
        exc = None if f.cancelled() else f.exception(timeout=0)
        if f.cancelled() or exc is not None:
            failed += 1
            first = first or ("cancelled" if f.cancelled() else repr(exc))
        elif not ok(f.result()):
            wrong += 1
    return {
        "n": n,
        "command": SHELL_ARGV,
        "warmup_tasks": SHELL_WARMUP,
        "tasks_submitted": n + SHELL_WARMUP,
        "submit_s": t_submitted - t0,
        "wall_s": t1 - t0,
        "submit_rate": n / (t_submitted - t0),
        "tasks_per_s": n / (t1 - t0),
        "failed": failed,
        "wrong_results": wrong,
        "first_error": first,
    }


def wl_map(h: Handle, wl, n: int, deadline: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n}
    t0 = now()
    it = h.map(wl.noop, range(n), timeout=max(1.0, remaining(deadline)))
    call_s = now() - t0
    out.update(call_s=call_s, call_rate=n / call_s)
    try:
        results = list(it)
    except (cf.TimeoutError, TimeoutError):
        out["consume"] = "timed out"
        raise WorkloadTimeout("map results not all back in time", out) from None
    except Exception as e:  # a task failed: keep the call figure, report the failure
        out["consume"] = f"error: {e!r}"
        return out
    total = now() - t0
    out.update(total_s=total, total_rate=n / total, wrong_results=int(results != list(range(n))))
    return out


@dataclass
class Workload:
    key: str
    run: Callable[[Handle, Any, int, float], dict[str, Any]]


WORKLOADS = [
    Workload("throughput", wl_throughput),
    Workload("roundtrip", wl_roundtrip),
    Workload("sleep", wl_sleep),
    Workload("as_completed", wl_as_completed),
    Workload("shell", wl_shell),
    Workload("map", wl_map),
]


# --------------------------------------------------------------------------------------------
# running


@dataclass
class PeerResult:
    spec: PeerSpec
    status: str = "pending"  # ok | not installed | import error | startup failed | skipped
    version: str | None = None
    error: str | None = None
    startup_s: float | None = None
    warmup_s: float | None = None
    ready_threaded_s: float | None = None  # ready to run with a second thread alive
    shutdown_s: float | None = None
    shutdown_status: str | None = None
    restarts: int = 0
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_check: dict[str, Any] | None = None  # Balsam: its store at the end (inspect)
    first_task_id: Any = field(default=None, repr=False)  # the last start's warm-up task
    submitted: int = 0  # tasks submitted since the last start, warm-up included

    @property
    def ready_s(self) -> float | None:
        """Constructor + first no-op result: ready to run."""
        if self.startup_s is None or self.warmup_s is None:
            return None
        return self.startup_s + self.warmup_s

    def as_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("spec", "first_task_id")}
        d["title"] = self.spec.title
        d["ready_s"] = self.ready_s
        return d


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Runner:
    def __init__(self, args, sizes):
        self.args = args
        self.sizes = sizes
        self.limit = args.time_limit
        self.machine = machine_info()
        self.results = {p.key: PeerResult(p) for p in PEERS if p.key in args.peers}
        self.watchdog = Watchdog(self.give_up)
        self.wl = importlib.import_module("workloads")
        self.started = time.time()
        self._reported = False
        self.live: tuple[PeerResult, Handle] | None = None  # the started peer, for clean-up
        self.pg = None  # the throwaway PostgreSQL server (LocalPostgres) while it runs
        self.pg_tmp: str | None = None
        self.current: tuple[PeerResult, str] | None = None  # what is running, for give_up
        self.alternating: dict[str, Any] | None = None  # see alternate_throughput

    # -- safety net -----------------------------------------------------------------------

    def give_up(self, what: str) -> None:
        """Called from the watchdog thread when the main thread is stuck for good."""
        log(
            f"\n!! {what} is stuck past the time limit and did not respond to interruption; "
            "printing the report so far and exiting."
        )
        if self.current is not None:
            r, wkey = self.current
            r.workloads[wkey] = {
                "status": "timed out",
                "detail": "hung: the benchmark gave up here",
            }
        with contextlib.suppress(Exception):
            self.report()
        terminate_children()
        with contextlib.suppress(Exception):
            self.stop_postgres()
        for path in list(TEMP_DIRS):
            remove_temp_dir(path)
        os._exit(3)

    # -- one peer -------------------------------------------------------------------------

    def probe(self, r: PeerResult) -> bool:
        try:
            r.version = r.spec.probe()
            return True
        except ImportError as e:
            r.status, r.error = "not installed", f"{type(e).__name__}: {e}"
        except Exception as e:
            r.status, r.error = "import error", f"{type(e).__name__}: {e}"
        return False

    def start(self, r: PeerResult) -> Handle | None:
        what = f"{r.spec.key} start-up"
        h = None
        r.error = "start-up hung: the benchmark gave up here"  # replaced below unless it hangs
        try:
            with self.watchdog.guard(self.limit, what, threads=False):
                t0 = now()
                h = r.spec.factory()
                self.live = (r, h)
                t1 = now()
                first = h.submit(self.wl.noop, -1)
                first.result(timeout=self.limit)
                t2 = now()
        except (Exception, Hung) as e:
            kind = "timed out" if isinstance(e, (Hung, cf.TimeoutError, TimeoutError)) else "failed"
            r.error = f"start-up {kind}: {type(e).__name__}: {e}"
            log(f"[{r.spec.key}] start-up {kind}: {e!r}")
            if not isinstance(e, Hung):
                log(traceback.format_exc().rstrip())
            if h is not None:
                self.stop(r, h, record=False)
            return None
        r.error = None
        r.first_task_id = getattr(first, "task_id", None)
        r.submitted = 1
        if r.startup_s is None:
            r.startup_s, r.warmup_s = t1 - t0, t2 - t1
            log(f"[{r.spec.key}] started in {t1 - t0:.2f} s, first task {1e3 * (t2 - t1):.1f} ms")
        else:
            r.restarts += 1
        return h

    def stop(self, r: PeerResult, h: Handle, record: bool = True, cancel: bool = False) -> None:
        self.live = None
        t0 = now()
        status = "ok"
        try:
            with self.watchdog.guard(self.limit, f"{r.spec.key} shutdown"):
                h.close(True, cancel)
        except Hung:
            status = "timed out"
        except Exception as e:
            status = f"error: {e!r}"
        if record:
            r.shutdown_s, r.shutdown_status = now() - t0, status
        if status != "ok":
            log(f"[{r.spec.key}] shutdown {status}")

    def run_peer(self, r: PeerResult) -> None:
        key = r.spec.key
        if not self.probe(r):
            log(f"[{key}] {r.status}: {r.error}")
            return
        log(f"[{key}] {r.version}")
        h = self.start(r)
        if h is None:
            r.status = "startup failed"
            return
        r.status = "ok"
        for w in WORKLOADS:
            if h is None:  # the previous workload timed out or failed: start afresh
                h = self.start(r)
                if h is None:
                    r.workloads[w.key] = {"status": "startup failed", "detail": r.error}
                    continue
            n = self.sizes[w.key]
            log(f"[{key}] {w.key}: {n} tasks ...")
            self.current = (r, w.key)
            t0 = now()
            deadline = t0 + self.limit
            rec: dict[str, Any]
            try:
                with self.watchdog.guard(self.limit + 15, f"{key} {w.key}"):
                    rec = {"status": "ok", **w.run(h, self.wl, n, deadline)}
            except WorkloadTimeout as e:
                rec = {"status": "timed out", "detail": str(e.args[0])}
                if len(e.args) > 1:
                    rec.update(e.args[1])
            except Hung:
                rec = {"status": "timed out", "detail": "a call blocked past the time limit"}
            except Exception as e:
                rec = {
                    "status": "error",
                    "detail": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                }
            self.current = None
            rec["elapsed_s"] = now() - t0
            r.workloads[w.key] = rec
            r.submitted += rec.get("tasks_submitted", rec.get("n", 0))
            log(
                f"[{key}] {w.key}: {rec['status']} in {rec['elapsed_s']:.2f} s"
                + (f" ({rec['detail']})" if "detail" in rec else "")
            )
            if rec["status"] != "ok":
                self.stop(r, h, record=False, cancel=True)
                h = None
        if h is not None:
            if h.inspect is not None:
                try:
                    with self.watchdog.guard(self.limit, f"{key} store check"):
                        r.store_check = {
                            "tasks_submitted": r.submitted,
                            **h.inspect(r.first_task_id),
                        }
                except (Exception, Hung) as e:
                    r.store_check = {"error": f"{type(e).__name__}: {e}"}
            self.stop(r, h)
        self.ready_with_a_thread(r)

    def ready_with_a_thread(self, r: PeerResult) -> None:
        """Ready to run once more, with a second thread alive in this process (as in a
        Jupyter kernel, or a master with a thread pool): balsam_futures then starts its
        launcher as a fresh interpreter instead of a fork."""
        idle = threading.Event()
        other = threading.Thread(target=idle.wait, daemon=True)
        other.start()
        h = None
        try:
            with self.watchdog.guard(self.limit, f"{r.spec.key} start-up with a thread",
                                     threads=False):
                t0 = now()
                h = r.spec.factory()
                h.submit(self.wl.noop, -1).result(timeout=self.limit)
                r.ready_threaded_s = now() - t0
        except (Exception, Hung) as e:
            log(f"[{r.spec.key}] start-up with a thread failed: {e!r}")
        finally:
            idle.set()
            other.join()
            if h is not None:
                self.stop(r, h, record=False)

    def run(self) -> None:
        for r in self.results.values():
            self.run_peer(r)
            if r.spec.key == "balsam" and r.status == "ok":
                self.run_postgres(r)
        if all(k in self.results and self.results[k].status == "ok" for k in ("balsam", "ppe")):
            self.alternate_throughput()

    def alternate_throughput(self) -> None:
        """Workload 1 again, in ALTERNATING_ROUNDS rounds alternating between Balsam and PPE,
        both started (Balsam first: its launcher is forked from a one-thread process, as in a
        user's script).  Each round's ratio compares runs seconds apart."""
        n = self.sizes["throughput"]
        rec: dict[str, Any] = {"n": n, "rounds": [], "status": "ok"}
        handles: dict[str, Handle] = {}
        log(f"[alternating] no-op throughput, {ALTERNATING_ROUNDS} rounds of {n} ...")
        try:
            with self.watchdog.guard(self.limit, "alternating rounds: start-up", threads=False):
                for key in ("balsam", "ppe"):
                    h = handles[key] = self.results[key].spec.factory()
                    wait_all([h.submit(self.wl.noop, i) for i in range(ALTERNATING_WARMUP)],
                             now() + self.limit)
            for k in range(ALTERNATING_ROUNDS):
                rates = {}
                for key in ("balsam", "ppe") if k % 2 == 0 else ("ppe", "balsam"):
                    with self.watchdog.guard(self.limit + 15, f"{key} alternating round {k + 1}"):
                        out = wl_throughput(handles[key], self.wl, n, now() + self.limit)
                    if out.get("failed") or out.get("wrong_results"):
                        raise RuntimeError(f"{key}: {out}")
                    rates[key] = out["tasks_per_s"]
                rec["rounds"].append(rates)
        except WorkloadTimeout as e:
            rec.update(status="timed out", detail=str(e.args[0]))
        except Hung:
            rec.update(status="timed out", detail="a call blocked past the time limit")
        except Exception as e:
            rec.update(status="error", detail=f"{type(e).__name__}: {e}")
        finally:
            for key, h in handles.items():
                try:
                    with self.watchdog.guard(self.limit, f"{key} shutdown (alternating)"):
                        h.close(True, True)
                except (Exception, Hung) as e:
                    log(f"[alternating] {key} shutdown: {e!r}")
        ratios = [r["balsam"] / r["ppe"] for r in rec["rounds"]]
        if ratios:
            rec.update(ratios=ratios, median_ratio=statistics.median(ratios))
        self.alternating = rec
        log(f"[alternating] {rec['status']}: Balsam/PPE per round "
            + ", ".join(f"{x:.2f}" for x in ratios))

    # -- Balsam on PostgreSQL (round trip) --------------------------------------------------

    def run_postgres(self, r: PeerResult) -> None:
        """Workload 2 for Balsam on a throwaway PostgreSQL server, when one can be started."""
        key = "roundtrip_pg"
        if self.args.no_postgres:
            r.workloads[key] = {"status": "skipped", "detail": "--no-postgres"}
            return
        missing = postgres_missing()
        if missing:
            r.workloads[key] = {"status": "not available", "detail": missing}
            log(f"[balsam] {key}: PostgreSQL not available: {missing}")
            return
        from balsam_futures import BalsamExecutor
        from balsam_futures.backends.pgserver import LocalPostgres

        n = self.sizes["roundtrip"]
        rec: dict[str, Any] = {"status": "ok"}
        r.workloads[key] = rec
        self.current = (r, key)
        t0 = now()
        ex = None
        try:
            tmp = make_temp_dir("bench-postgres-")
            os.chmod(tmp, 0o711)  # the server's user (as root: postgres) must enter it
            run_as = "postgres" if os.geteuid() == 0 else None
            self.pg = LocalPostgres(os.path.join(tmp, "pg"), run_as=run_as)
            self.pg_tmp = tmp
            rec["server"] = {"run_as": run_as}
            log(f"[balsam] {key}: starting PostgreSQL (as {run_as or 'this user'}) ...")
            with self.watchdog.guard(self.limit, "PostgreSQL start-up"):
                t1 = now()
                self.pg.start()
                url = self.pg.create_database("bench_roundtrip")
                rec["server"]["startup_s"] = now() - t1
                rec["server"].update(server_settings(url))
            log(
                f"[balsam] {key}: PostgreSQL {rec['server'].get('server_version')} up in "
                f"{rec['server']['startup_s']:.2f} s; {n} round trips ..."
            )
            deadline = now() + self.limit
            with self.watchdog.guard(self.limit + 15, f"balsam {key}"):
                t1 = now()
                ex = BalsamExecutor(
                    max_workers=MAX_WORKERS, site=os.path.join(tmp, "site"), db_url=url
                )
                t2 = now()
                ex.submit(self.wl.noop, -1).result(timeout=remaining(deadline))
                rec.update(startup_s=t2 - t1, first_task_s=now() - t2)
                for i in range(PG_ROUNDTRIP_WARMUP):
                    ex.submit(self.wl.noop, i).result(timeout=remaining(deadline))
                rec["warmup_roundtrips"] = PG_ROUNDTRIP_WARMUP
                h = Handle(ex.submit, ex.map, lambda wait, cancel: None)
                rec.update(wl_roundtrip(h, self.wl, n, deadline))
        except WorkloadTimeout as e:
            rec.update(status="timed out", detail=str(e.args[0]))
        except (Hung, cf.TimeoutError, TimeoutError):
            rec.update(status="timed out", detail="a call blocked past the time limit")
        except Exception as e:
            rec.update(
                status="error", detail=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()
            )
            # the site goes with the server's directory: keep what its launcher logged
            for path in sorted(Path(self.pg_tmp or ".", "site", "logs").glob("*.log")):
                with contextlib.suppress(OSError):
                    rec.setdefault("logs", {})[path.name] = path.read_text(errors="replace")[-3000:]
        finally:
            self.current = None
            rec["elapsed_s"] = now() - t0
            if ex is not None:
                try:
                    with self.watchdog.guard(self.limit, "balsam on PostgreSQL: shutdown"):
                        ex.shutdown(wait=True, cancel_futures=True)
                except (Exception, Hung) as e:
                    rec["shutdown_status"] = f"{type(e).__name__}: {e}"
            self.stop_postgres()
        log(
            f"[balsam] {key}: {rec['status']} in {rec['elapsed_s']:.2f} s"
            + (f" ({rec['detail']})" if "detail" in rec else "")
        )

    def stop_postgres(self) -> None:
        """Stop the server (fast, then immediate) and remove its directory; the directory stays
        (its path printed) if the server would not stop."""
        pg, self.pg = self.pg, None
        if pg is None:
            return
        try:
            pg.stop()
        except Exception as e:
            log(f"[postgres] pg_ctl stop -m fast failed: {e!r}; trying -m immediate")
            try:
                pg.stop("immediate")
            except Exception as e2:
                log(f"[postgres] could not stop the server: {e2!r}; left in {pg.path}")
                TEMP_DIRS.discard(self.pg_tmp)
                return
        if self.pg_tmp is not None:
            remove_temp_dir(self.pg_tmp)
            self.pg_tmp = None

    # -- report ---------------------------------------------------------------------------

    def report(self) -> None:
        if self._reported:
            return
        self._reported = True
        print(render_report(self))
        if self.args.json:
            data = {
                "machine": self.machine,
                "quick": self.args.quick,
                "sizes": self.sizes,
                "time_limit_s": self.limit,
                "max_workers": MAX_WORKERS,
                "started": self.started,
                "duration_s": time.time() - self.started,
                "peers": {k: r.as_json() for k, r in self.results.items()},
                "alternating_throughput": self.alternating,
                "table": table_rows(self),
            }
            Path(self.args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
            print(f"raw numbers written to {self.args.json}")
        sys.stdout.flush()


def postgres_missing() -> str | None:
    """Why a throwaway PostgreSQL server cannot be started here, or None if it can."""
    try:
        import psycopg2  # noqa: F401
    except ImportError as e:
        return f"psycopg2 does not import ({e})"
    try:
        from balsam_futures.backends.pgserver import find_binary
    except ImportError as e:
        return f"balsam_futures.backends.pgserver does not import ({e})"
    for prog in ("initdb", "pg_ctl", "postgres"):
        try:
            find_binary(prog)
        except Exception:
            return f"no PostgreSQL server program {prog} (on PATH or /usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "run as root, and there is no user postgres for the server to run as"
        if shutil.which("runuser") is None:
            return "run as root, and there is no runuser to start the server as postgres"
    return None


def server_settings(url: str) -> dict[str, str]:
    """The server's version and durability settings."""
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        out = {}
        with conn.cursor() as cur:
            for name in ("server_version", "fsync", "synchronous_commit"):
                cur.execute(f"SHOW {name}")
                out[name] = cur.fetchone()[0]
        return out
    finally:
        conn.close()


def terminate_children() -> None:
    """Best effort, Linux: SIGTERM the direct children of this process (worker pools, launcher,
    scheduler) so that a give-up exit does not leave them behind."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                os.kill(int(stat.parent.name), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            continue


# --------------------------------------------------------------------------------------------
# table


class Flagged(float):
    """A figure measured while some tasks failed or returned wrong results (shown with a *)."""


@dataclass
class Row:
    label: str
    get: Callable[[PeerResult], Any]  # a number, a status string, or None
    fmt: Callable[[float], str]
    target: str = "-"
    met: Callable[[float | None, float | None], str] | None = None  # (balsam, ratio) -> text
    ratio: bool = True  # show Balsam/PPE
    ratio_fmt: str = "{:.2f}x"


def wl_metric(wkey: str, mkey: str) -> Callable[[PeerResult], Any]:
    def get(r: PeerResult):
        rec = r.workloads.get(wkey)
        if rec is None:
            return None
        if mkey in rec and rec.get("status") == "ok":
            bad = rec.get("failed", 0) or rec.get("wrong_results", 0)
            return Flagged(rec[mkey]) if bad else rec[mkey]
        if mkey in rec:  # e.g. map call figure of a map whose results then timed out
            return rec[mkey]
        return rec.get("status")

    return get


def map_total(r: PeerResult):
    rec = r.workloads.get("map")
    if rec is None:
        return None
    if "consume" in rec:
        return rec["consume"].split(":")[0]
    return wl_metric("map", "total_rate")(r)


def yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


def goal_floor(ok_goal: bool, ok_floor: bool) -> str:
    """The met text of a target with a floor: the floor, then the goal."""
    return f"{yes_no(ok_floor)} (goal: {yes_no(ok_goal)})"


def at_most_ms(goal: float, floor: float) -> Callable[[float | None, float | None], str]:
    return lambda b, q: "-" if b is None else goal_floor(b <= goal, b <= floor)


def rows_for(sizes: dict[str, int]) -> list[Row]:
    rate = "{:,.0f}".format
    ms = "{:.2f}".format
    rt_goal, rt_floor = T_RT_P50_MS["sqlite"]
    pg_goal, pg_floor = T_RT_P50_MS["postgresql"]
    tp_goal, tp_floor = T_THROUGHPUT
    return [
        Row("start-up: constructor (s)", lambda r: r.startup_s, "{:.2f}".format, ratio=False),
        Row(
            "start-up: first task, warm-up (s)", lambda r: r.warmup_s, "{:.3f}".format, ratio=False
        ),
        Row(
            "start-up: ready to run, constructor + first result (s)",
            lambda r: r.ready_s,
            "{:.3f}".format,
            f"<={T_READY_S:g} s",
            lambda b, q: "-" if b is None else yes_no(b <= T_READY_S),
            ratio=False,
        ),
        Row("   ready to run, a second thread alive in the master (s)",
            lambda r: r.ready_threaded_s, "{:.3f}".format, ratio=False),
        Row(
            f"1. no-op throughput, {sizes['throughput']:,} x submit (tasks/s)",
            wl_metric("throughput", "tasks_per_s"),
            rate,
            f">={tp_floor:g}x PPE (goal >={tp_goal:.1f}x)",
            lambda b, q: "-" if q is None else goal_floor(q >= tp_goal, q >= tp_floor),
        ),
        Row(
            "   of which submit() calls alone (tasks/s)",
            wl_metric("throughput", "submit_rate"),
            rate,
        ),
        Row(
            f"2. round trip p50, {sizes['roundtrip']} sequential, Balsam on SQLite (ms)",
            wl_metric("roundtrip", "p50_ms"),
            ms,
            f"<={rt_floor:g} ms (goal <={rt_goal:.1f} ms)",
            at_most_ms(rt_goal, rt_floor),
        ),
        Row("   round trip p95, Balsam on SQLite (ms)", wl_metric("roundtrip", "p95_ms"), ms),
        Row(
            "   round trip p50, Balsam on PostgreSQL (ms)",
            wl_metric("roundtrip_pg", "p50_ms"),
            ms,
            f"<={pg_floor:.1f} ms (goal <={pg_goal:g} ms)",
            at_most_ms(pg_goal, pg_floor),
        ),
        Row(
            "   round trip p95, Balsam on PostgreSQL (ms)", wl_metric("roundtrip_pg", "p95_ms"), ms
        ),
        Row(
            f"3. {sizes['sleep']:,} x sleep({SLEEP_S}) efficiency (%)",
            wl_metric("sleep", "efficiency_pct"),
            "{:.1f}".format,
            f">={T_SLEEP_EFF_PCT:g} %",
            lambda b, q: "-" if b is None else yes_no(b >= T_SLEEP_EFF_PCT),
        ),
        Row(
            f"4. as_completed, {sizes['as_completed']:,} x sleep U(0, "
            f"{RANDOM_SLEEP_MAX_S * 1e3:g} ms) (wall s)",
            wl_metric("as_completed", "wall_s"),
            "{:.2f}".format,
            f"<={T_AS_COMPLETED:.2f}x PPE (within 3 %)",
            # met says by how much, to 0.01 %: at 2 decimals 1.0305x would read 1.03x
            lambda b, q: (
                "-" if q is None else f"{yes_no(q <= T_AS_COMPLETED)} ({100 * (q - 1):+.2f} %)"
            ),
            ratio_fmt="{:.3f}x",
        ),
        Row(
            "   as_completed efficiency, ideal / wall (%)",
            wl_metric("as_completed", "efficiency_pct"),
            "{:.1f}".format,
        ),
        Row(
            f"5. shell tasks, {sizes['shell']:,} x {' '.join(SHELL_ARGV)} (tasks/s)",
            wl_metric("shell", "tasks_per_s"),
            rate,
            f">={T_SHELL_RATE:,.0f}/s",
            lambda b, q: "-" if b is None else yes_no(b >= T_SHELL_RATE),
        ),
        Row(
            f"6. map() call, {sizes['map']:,} tasks (tasks/s persisted)",
            wl_metric("map", "call_rate"),
            rate,
            f">={T_MAP_RATE:,.0f}/s",
            lambda b, q: "-" if b is None else yes_no(b >= T_MAP_RATE),
        ),
        Row("   map() call + all results (tasks/s)", map_total, rate),
        Row("shutdown (s)", lambda r: r.shutdown_s, "{:.2f}".format, ratio=False),
    ]


def cell_value(r: PeerResult, row: Row) -> Any:
    if r.status in ("not installed", "import error", "startup failed"):
        return r.status
    return row.get(r)


def table_rows(runner: Runner) -> list[dict[str, Any]]:
    out = []
    for row in rows_for(runner.sizes):
        values = {k: cell_value(r, row) for k, r in runner.results.items()}
        b, p = values.get("balsam"), values.get("ppe")
        num = (int, float)
        ratio = b / p if row.ratio and isinstance(b, num) and isinstance(p, num) and p else None
        bnum = b if isinstance(b, num) else None
        met = row.met(bnum, ratio) if row.met else "-"
        out.append(
            {
                "metric": row.label,
                "values": values,
                "ratio_balsam_ppe": ratio,
                "target": row.target,
                "met": met,
            }
        )
    return out


def render_table(runner: Runner) -> str:
    rows = rows_for(runner.sizes)
    data = table_rows(runner)
    peers = list(runner.results.values())
    header = ["metric"] + [r.spec.title for r in peers] + ["Balsam/PPE", "target", "met"]
    lines = []
    for row, d in zip(rows, data, strict=True):
        cells = [row.label]
        for r in peers:
            v = d["values"][r.spec.key]
            if v is None:
                cells.append("-")
            elif isinstance(v, (int, float)):
                cells.append(row.fmt(v) + ("*" if isinstance(v, Flagged) else ""))
            else:
                cells.append(str(v))
        q = d["ratio_balsam_ppe"]
        cells += ["-" if q is None else row.ratio_fmt.format(q), row.target, d["met"]]
        lines.append(cells)
    widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=True)]

    def fmt(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:-2], widths[1:-2], strict=True)]
        tail = [c.ljust(w) for c, w in zip(cells[-2:], widths[-2:], strict=True)]
        return "  ".join([first, *rest, *tail]).rstrip()

    rule = "-" * len(fmt(["-" * w for w in widths]))
    return "\n".join([fmt(header), rule, *(fmt(c) for c in lines)])


def load_average_line(m: dict) -> str:
    """The machine's load at the start and (read now) at the end of the run."""
    line = f"load average at start: {m['loadavg_at_start']}"
    with contextlib.suppress(OSError, AttributeError):
        m["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        line += f", at end: {m['loadavg_at_end']}"
    return line + " (other load on the machine skews every figure)"


def render_report(runner: Runner) -> str:
    m = runner.machine
    out = [
        "",
        "=" * 78,
        "Executor benchmark" + ("  (--quick)" if runner.args.quick else ""),
        "=" * 78,
        f"machine: nproc={m['nproc']} (os.cpu_count={m['os_cpu_count']}), {m['platform']}",
        f"python:  {m['implementation']} {m['python']} ({m['executable']}), "
        f"sqlite {m['sqlite']}, multiprocessing start method {m['mp_start_method']}",
    ]
    if "loadavg_at_start" in m:
        out.append(load_average_line(m))
    out.append(f"workers per peer: {MAX_WORKERS}; time limit per workload: {runner.limit:g} s")
    out.append("peers:")
    for r in runner.results.values():
        what = r.version if r.version else f"{r.status} ({r.error})"
        out.append(f"  {r.spec.title:<7} {what}")
    pg = (
        runner.results["balsam"].workloads.get("roundtrip_pg")
        if "balsam" in runner.results
        else None
    )
    if pg is not None:
        srv = pg.get("server") or {}
        if "server_version" in srv:
            out.append(
                f"PostgreSQL (Balsam's round trip only): server {srv['server_version']}, a "
                f"throwaway LocalPostgres (fsync={srv['fsync']}, synchronous_commit="
                f"{srv['synchronous_commit']}), up in {srv['startup_s']:.2f} s"
            )
    out += ["", render_table(runner), ""]
    out += alternating_lines(runner)
    notes = []
    for r in runner.results.values():
        if r.restarts:
            notes.append(
                f"{r.spec.title}: restarted {r.restarts} time(s) after a timed-out or "
                "failed workload"
            )
        if r.error and r.status not in ("not installed", "import error"):
            notes.append(f"{r.spec.title}: {r.error}")
        if r.shutdown_status not in (None, "ok"):
            notes.append(f"{r.spec.title}: shutdown {r.shutdown_status}")
        for wkey, rec in r.workloads.items():
            if rec.get("detail"):
                what = "round trip on PostgreSQL" if wkey == "roundtrip_pg" else wkey
                skipped = " (rows skipped)" if rec["status"] == "not available" else ""
                notes.append(f"{r.spec.title} {what}: {rec['status']}{skipped}: {rec['detail']}")
            if rec.get("failed") or rec.get("wrong_results"):
                notes.append(
                    f"{r.spec.title} {wkey}: {rec.get('failed', 0)} task(s) failed, "
                    f"{rec.get('wrong_results', 0)} wrong result(s); first error: "
                    f"{rec.get('first_error')}  (* in the table)"
                )
            if str(rec.get("consume", "")).startswith("error"):
                notes.append(f"{r.spec.title} map results: {rec['consume']}")
            if rec.get("shutdown_status") not in (None, "ok"):
                notes.append(f"{r.spec.title} {wkey}: shutdown {rec['shutdown_status']}")
            for name, text in (rec.get("logs") or {}).items():
                tail = " | ".join(line.strip() for line in text.strip().splitlines()[-4:])
                notes.append(f"{r.spec.title} {wkey}: {name} ends: {tail}")
        sc = r.store_check
        if sc is not None:
            if "error" in sc:
                notes.append(f"{r.spec.title}: store check failed: {sc['error']}")
            else:
                states = ", ".join(f"{k} {v:,}" for k, v in sorted(sc["tasks_by_state"].items()))
                same = "all" if sc["tasks_in_store"] == sc["tasks_submitted"] else "NOT all"
                line = (
                    f"{r.spec.title}: every task persisted? {same}: {sc['tasks_in_store']:,} tasks "
                    f"in its store at the end, {sc['tasks_submitted']:,} submitted to it"
                    + (" since its last restart" if r.restarts else "")
                    + f" ({states})"
                )
                if sc.get("sample_history"):
                    line += (
                        f"; history of its first task (id {sc['sample_task_id']}): "
                        + " -> ".join(sc["sample_history"])
                    )
                notes.append(line)
    ac = [
        (r.spec.title, r.workloads["as_completed"])
        for r in runner.results.values()
        if r.workloads.get("as_completed", {}).get("status") == "ok"
    ]
    if ac:
        rec0 = ac[0][1]
        notes.append(
            f"4: the same {rec0['n']:,} durations for every peer (random.Random({RANDOM_SEED})"
            f".uniform(0, {RANDOM_SLEEP_MAX_S:g})), {rec0['sum_sleep_s']:.2f} s of sleep in all: "
            f"ideal wall {rec0['ideal_s']:.2f} s on {MAX_WORKERS} workers; all submitted, then "
            "timed until concurrent.futures.as_completed has yielded the last one."
        )
    notes.append(
        f"5: Balsam runs ShellApp({' '.join(SHELL_ARGV)!r}) (its own working directory and "
        f"job.out per task); the other peers run subprocess.run({SHELL_ARGV!r}) in a task "
        f"function; after {SHELL_WARMUP} untimed tasks."
    )
    if m["nproc"] <= MAX_WORKERS + 1:
        notes.append(
            f"only {m['nproc']} CPUs: the driver, {MAX_WORKERS} workers and any "
            "scheduler/launcher process share them, so every figure is contention-bound."
        )
    notes.append(
        "PPE = concurrent.futures.ProcessPoolExecutor. Ratio and targets apply to Balsam; "
        "map() call rate for peers without a task store is context only."
    )
    out.append("notes:")
    out += [f"  - {n}" for n in notes]
    return "\n".join(out)


def alternating_lines(runner: Runner) -> list[str]:
    """The alternating rounds of workload 1 (see ALTERNATING_ROUNDS), under the table."""
    rec = runner.alternating
    if rec is None:
        return []
    goal, floor = T_THROUGHPUT
    if not rec.get("ratios"):
        return [f"1, alternating rounds: {rec['status']} ({rec.get('detail', '')})", ""]
    ratios = rec["ratios"]
    med = rec["median_ratio"]
    rounds = "; ".join(f"{r['balsam']:,.0f} / {r['ppe']:,.0f}" for r in rec["rounds"])
    lines = [
        f"1, again in {len(ratios)} rounds alternating Balsam and PPE (both started; "
        f"{rec['n']:,} no-ops a round): Balsam/PPE median {med:.2f}x, "
        f"min-max {min(ratios):.2f}-{max(ratios):.2f}x; "
        f"target >={floor:g}x (goal >={goal:.1f}x): {goal_floor(med >= goal, med >= floor)}",
        f"   tasks/s per round, Balsam / PPE: {rounds}"
        + ("" if rec["status"] == "ok" else f" ({rec['status']}: {rec.get('detail', '')})"),
        "",
    ]
    return lines


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="counts divided by ~5 (smoke run)")
    ap.add_argument("--json", metavar="FILE", help="write all raw numbers to FILE")
    ap.add_argument(
        "--peers",
        default=",".join(p.key for p in PEERS),
        help="comma-separated subset of: %(default)s",
    )
    ap.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        metavar="S",
        help="time limit per workload, and for start-up (default %(default)s s)",
    )
    ap.add_argument(
        "--no-postgres",
        action="store_true",
        help="skip Balsam's round trip on a throwaway PostgreSQL server",
    )
    args = ap.parse_args(argv)
    keys = [p.key for p in PEERS]
    args.peers = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = [k for k in args.peers if k not in keys]
    if unknown:
        ap.error(f"unknown peer(s) {unknown}; choose from {keys}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_import_paths()
    runner = Runner(args, QUICK_SIZES if args.quick else FULL_SIZES)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("\ninterrupted: shutting the running peer down; report so far follows")
        if runner.live is not None:
            with contextlib.suppress(KeyboardInterrupt):
                runner.stop(*runner.live, record=False, cancel=True)
        with contextlib.suppress(KeyboardInterrupt):
            runner.stop_postgres()
        runner.report()
        terminate_children()
        for path in list(TEMP_DIRS):
            remove_temp_dir(path)
        return 130
    runner.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
