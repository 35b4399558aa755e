#!/usr/bin/env python
"""An ensemble of LAMMPS runs (a Lennard-Jones melt on MPI ranks) over a parameter sweep.

    python examples/lammps_campaign/campaign.py [--temperatures 1.0,2.0,3.0]
        [--densities 0.8442,0.95] [--ranks 2] [--cells 10] [--steps 250] [--workers N]
        [--site DIR] [--json FILE] [--lmp PATH]

Every point of the sweep (initial temperature x density) is one shell task: LAMMPS's melt
example on ``--ranks`` MPI ranks, started by the launcher with the MPI launcher of the MPI that
LAMMPS is built with (``BalsamExecutor(mpi_launcher=...)``).
Each task runs in its own directory under the site's ``data/<campaign>/`` with its output in
``job.out``; a post-processing hook parses the thermo table there into the task's result
(final temperature, pressure and total energy, the energy drift, ranks, atoms), and a summary
table is printed at the end.  Where LAMMPS is not installed the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

from melt import Lammps, LammpsNotFound, find_lammps, melt_app

from balsam_futures import BalsamExecutor, Resources


def floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--temperatures", type=floats, default=[1.0, 2.0, 3.0], metavar="T,T",
                    help="initial temperatures, LJ units (default 1.0,2.0,3.0)")
    ap.add_argument("--densities", type=floats, default=[0.8442, 0.95], metavar="RHO,RHO",
                    help="fcc lattice densities, LJ units (default 0.8442,0.95)")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks per run (default 2)")
    ap.add_argument("--cells", type=int, default=10,
                    help="box edge in lattice cells: 4 x cells^3 atoms (default 10: 4,000)")
    ap.add_argument("--steps", type=int, default=250, help="time steps per run (default 250)")
    ap.add_argument("--seed", type=int, default=87287, help="velocity seed (the example's)")
    ap.add_argument("--workers", type=int, default=None,
                    help="launcher worker slots = cores it may use (default: this machine's)")
    ap.add_argument("--site", default=None, help="site directory (default ./.balsam_futures)")
    ap.add_argument("--campaign", default="lammps-melt",
                    help="workflow tag; runs go to <site>/data/<campaign>/ (default %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's result to FILE")
    ap.add_argument("--lmp", default=None, help="the LAMMPS binary (default: lmp on PATH)")
    args = ap.parse_args(argv)
    for name in ("ranks", "cells", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    workers = args.workers or os.cpu_count() or 1
    if workers < args.ranks:
        ap.error(f"--workers {workers} is fewer than --ranks {args.ranks}: a run could never "
                 "start; give at least as many worker slots as ranks")
    args.workers = workers
    return args


def run_seconds(ex: BalsamExecutor, task_id: int) -> float | None:
    """How long the task's last run took, from its history (claimed to run done)."""
    started = None
    took = None
    for h in ex.store.history(task_id):
        if h["to_state"] == "RUNNING":
            started = h["at"]
        elif h["to_state"] == "RUN_DONE" and started is not None:
            took = h["at"] - started
    return took


def run_campaign(args: argparse.Namespace, lammps: Lammps) -> tuple[list[dict[str, Any]],
                                                                     list[str]]:
    """Submit the sweep, report each run as it ends; returns (results, failures)."""
    app = melt_app(lammps)
    points = list(itertools.product(args.temperatures, args.densities))
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    # The launcher starts each run on ``ranks`` ranks with the MPI launcher of LAMMPS's own
    # MPI, and packs runs by cores: never more ranks at once than worker slots.
    with BalsamExecutor(max_workers=args.workers, site=args.site,
                        mpi_launcher=lammps.mpi) as ex:
        run = ex.options(tags={"workflow": args.campaign},
                         resources=Resources(ranks_per_node=args.ranks))
        futures = {
            run.submit(app, temperature=t, density=rho, cells=args.cells,
                       steps=args.steps, seed=args.seed): (t, rho)
            for t, rho in points
        }
        print(f"{len(futures)} LAMMPS runs submitted ({lammps.lmp}, {lammps.mpi} via "
              f"{lammps.mpirun}, {args.ranks} ranks each, {args.workers} worker slots)",
              flush=True)
        for k, fut in enumerate(as_completed(futures), 1):
            t, rho = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # a failed run is reported; the others go on
                failures.append(f"T={t:g} rho={rho:g}: {type(exc).__name__}: {exc}")
                print(f"[{k}/{len(futures)}] T={t:g} rho={rho:g}: FAILED: {exc}", flush=True)
                continue
            res["task_id"] = fut.task_id
            res["run_s"] = run_seconds(ex, fut.task_id)
            results.append(res)
            print(f"[{k}/{len(futures)}] T={t:g} rho={rho:g}: final T={res['final_temp']:.3f}"
                  f" P={res['final_press']:.3f} E={res['final_etotal']:.4f} on "
                  f"{res['ranks']} ranks in {res['run_s'] or 0:.1f} s", flush=True)
    results.sort(key=lambda r: (r["temperature"], r["density"]))
    return results, failures


def summary_table(results: list[dict[str, Any]]) -> str:
    header = ["T0", "rho", "atoms", "ranks", "final T", "final P", "final E", "E drift",
              "loop s", "run s"]
    rows = [[f"{r['temperature']:g}", f"{r['density']:g}", f"{r['atoms']:,}", str(r["ranks"]),
             f"{r['final_temp']:.3f}", f"{r['final_press']:.3f}", f"{r['final_etotal']:.4f}",
             f"{r['energy_drift']:.1e}", f"{r['loop_time_s']:.2f}",
             f"{r['run_s']:.2f}" if r.get("run_s") is not None else "-"]
            for r in results]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lammps = find_lammps(args.lmp)
    except LammpsNotFound as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 0
    t0 = time.monotonic()
    results, failures = run_campaign(args, lammps)
    wall = time.monotonic() - t0
    print()
    print(summary_table(results))
    print(f"\n{len(results)} run(s) finished, {len(failures)} failed, in {wall:.1f} s")
    for line in failures:
        print(f"  failed: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "lammps": {"lmp": lammps.lmp, "mpi": lammps.mpi, "mpirun": lammps.mpirun},
            "wall_s": wall, "runs": results, "failures": failures,
        }, indent=2, default=str) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
