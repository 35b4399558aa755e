"""The packing campaigns through the real launcher, in simulated execution.

    python benchmarks/packing_live.py [--only big-among-small] [--seeds 1] [--time-scale 0.02]

``benchmarks/packing.py --campaigns`` measures claim orders in a model: the launcher's
``NodePool`` and the store's order key, with estimates learned per kind in the model's own
loop.  Here the same seeded campaigns (same kinds, shapes, timeouts and run times) run through
the real thing: one ``balsam-futures launcher --simulate`` with the campaign's virtual nodes
(64 cores and 4 GPUs each) on a fresh SQLite site, and a real master that submits every task
(its kind as ``kind=``, its timeout, its run time as ``data["sim_seconds"]``) with
``launcher=False``.  The claims, their order from the store's index, the estimates learned
from ``bf_runs`` (with the store's window, refresh factor and fill-in), the backfill and the
placement are the launcher's own; only the runs are simulated.

Times are scaled by ``--time-scale`` (0.02: a model minute lasts 1.2 s), so a campaign takes
a few minutes; the figure is the lower bound's fraction of the makespan (the first start to
the last end, from ``bf_runs``), the bound being packing.py's, scaled alike.  The model's
figure for the same campaign and seed, in the launcher's order, is printed beside it, and the
difference is what the real launcher adds or loses (claim round trips, the estimates' refresh
factor, tasks learned in batches).  A closed loop submits the next task as each one
completes, from the master, as a user's loop would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packing import CAMPAIGNS, first_fit, in_claim_order, launcher_key, lower_bound  # noqa: E402

from balsam_futures import BalsamExecutor  # noqa: E402

CORES_PER_NODE, GPUS_PER_NODE = 64, 4
WINDOW = 512


def _wait_registered(store, deadline: float) -> None:
    while time.monotonic() < deadline:
        if any(la["state"] == "RUNNING" for la in store.list_launchers()):
            return
        time.sleep(0.1)
    raise RuntimeError("the launcher did not register in time; see its log")


def live(name: str, seed: int, scale: float, site: Path, timeout: float,
         limit: int | None = None) -> dict:
    """One campaign through a simulated launcher; its figures.  ``limit``: only the first
    tasks of the campaign (a quick check of the harness; a closed loop then queues half of
    them at first)."""
    from balsam_futures.backends import open_store

    rng = random.Random(seed)
    nodes, kinds, order, initial = CAMPAIGNS[name](rng)
    durations = [kinds[k].mean_s * rng.uniform(0.8, 1.2) for k in order]
    if limit is not None and limit < len(order):
        order, durations = order[:limit], durations[:limit]
        initial = min(initial, limit // 2)
    model = in_claim_order(nodes, kinds, order, durations, initial, WINDOW,
                           order_key=launcher_key)
    plain = first_fit(nodes, kinds, order, durations, initial, WINDOW)
    bound = lower_bound(nodes, kinds, order, durations, GPUS_PER_NODE) * scale

    site.mkdir(parents=True)
    store = open_store(f"sqlite:///{site / 'balsam.db'}")
    ex = BalsamExecutor(site=site, launcher=False)

    def submit(task: int):
        k = kinds[order[task]]
        return ex.options(kind=k.name, resources=k.res,
                          timeout=k.timeout * scale if k.timeout else None,
                          data={"sim_seconds": durations[task] * scale}).submit(abs, task)

    first = initial or len(order)
    pending = {submit(t) for t in range(first)}
    ex.flush()  # every queued task is in the store before the launcher's first claim
    with open(site / "launcher.log", "w") as log:  # the child keeps its copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site),
             "--simulate", "--nodes", str(nodes), "--cores-per-node", str(CORES_PER_NODE),
             "--gpus-per-node", str(GPUS_PER_NODE)], stdout=log, stderr=subprocess.STDOUT)
    began = time.monotonic()
    try:
        _wait_registered(store, began + 120)
        submitted, failed = first, 0
        while pending:
            done, pending = wait(pending, timeout=max(1.0, began + timeout - time.monotonic()),
                                 return_when=FIRST_COMPLETED)
            if not done:
                raise RuntimeError(f"{name} seed {seed}: not finished after {timeout:g} s; "
                                   f"tasks by state: {ex.store.count_by_state()}")
            failed += sum(1 for f in done if f.exception() is not None)
            for _ in done:
                if initial and submitted < len(order):
                    pending.add(submit(submitted))
                    submitted += 1
    finally:
        proc.terminate()
        proc.wait(60)
        ex.shutdown(wait=False, cancel_futures=True)
    ran = store.list_runs()  # the execution profile: where and when each run went
    start, end, runs = (min(r["started_at"] for r in ran), max(r["ended_at"] for r in ran),
                        len(ran))
    store.close()
    return {"campaign": name, "seed": seed, "tasks": len(order), "runs": runs,
            "failed": failed, "makespan_s": end - start, "bound_s": bound,
            "live": bound / (end - start), "model": model, "first_fit": plain}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(CAMPAIGNS), action="append",
                    help="a campaign (repeatable; default: all four)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--time-scale", type=float, default=0.02,
                    help="seconds of the run per second of the campaign (default 0.02)")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="give up on a campaign after this many seconds")
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help="only the first N tasks of each campaign (a quick check)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    ap.add_argument("--dir", metavar="DIR", type=Path, default=None,
                    help="where the sites (stores, launcher logs) go (default: a new "
                         "temporary directory)")
    args = ap.parse_args()
    figures = []
    base = args.dir or Path(tempfile.mkdtemp(prefix="packing-live-"))
    print(f"{'campaign':<18}{'seed':>5}{'tasks':>7}{'makespan':>10}{'first-fit':>11}"
          f"{'model':>8}{'launcher':>10}")
    for name in args.only or list(CAMPAIGNS):
        for seed in args.seeds:
            got = live(name, seed, args.time_scale, base / f"{name}-{seed}", args.timeout,
                       args.limit)
            figures.append(got)
            mark = " <98" if got["live"] < 0.98 else ""
            print(f"{name:<18}{seed:>5}{got['tasks']:>7}{got['makespan_s']:>9.1f}s"
                  f"{got['first_fit']:>10.1%} {got['model']:>7.1%} {got['live']:>8.1%}{mark}"
                  + (f"  ({got['failed']} failed)" if got["failed"] else ""), flush=True)
    print(f"(time scale {args.time_scale:g}; logs and stores under {base}; % of the lower "
          f"bound, first-fit and model from benchmarks/packing.py's model)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BALSAM_FUTURES_LOG_LEVEL", "WARNING")
    sys.exit(main())
