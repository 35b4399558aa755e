"""Packing simulation: the launcher's placement code on 512 virtual nodes x 4 GPUs.

    python benchmarks/packing.py [--nodes 512] [--gpu-tasks 12000] [--mpi-tasks 400] [--seed 1]

A discrete-event simulation drives the real ``NodePool`` (balsam_futures/launcher/packing.py)
with a mixed workload: MPI tasks of 1 to 64 whole nodes and one-GPU tasks, of varied
durations, all queued at the start in a random order.  Two policies place them:

- **balsam_futures**: what the launcher does — walk the queue in claim order and start every
  task that fits now, skipping the ones that do not (backfill), best-fit for single-node tasks;
- **greedy first-come**: start tasks strictly in order, stop at the first that does not fit.

Utilization is the ideal's fraction: total work (node-seconds; a one-GPU task holds a quarter
of a 4-GPU node) / (nodes x makespan).  Balsam's published figure is 91 % of Theta.
Target: >= 95 % for balsam_futures.  Also printed: placement cost per task, in microseconds.
What is lost is mostly the tail: near the end, the last long runs hold a few nodes while the
rest are idle; a longer campaign (``--gpu-tasks 48000 --mpi-tasks 1600``) loses less of it.
Holding idle nodes back for a waiting multi-node task was tried here and measured worse: draining
without run-time estimates 91.8-94.9 %, and EASY backfill (a reservation at the shadow time from
run-time estimates) 92.2 % with exact estimates and 91.9 % with estimates 1-2x the run time,
against 94.6 % for plain backfill; so the launcher does not reserve.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsam_futures import Resources  # noqa: E402
from balsam_futures.launcher.nodes import NodeSpec  # noqa: E402
from balsam_futures.launcher.packing import NodePool  # noqa: E402

MPI_SIZES = (1, 2, 4, 8, 16, 32, 64)


def workload(rng: random.Random, gpu_tasks: int, mpi_tasks: int) -> list[tuple[Resources, float]]:
    tasks = []
    for _ in range(mpi_tasks):
        nodes = rng.choice(MPI_SIZES)
        # Larger runs tend to run longer: 2 to 20 minutes.
        tasks.append((Resources(num_nodes=nodes, ranks_per_node=4, gpus_per_rank=1),
                      rng.uniform(120, 1200)))
    for _ in range(gpu_tasks):
        tasks.append((Resources(gpus_per_rank=1), rng.uniform(30, 600)))
    rng.shuffle(tasks)
    return tasks


def work_of(res: Resources, seconds: float, gpus_per_node: int) -> float:
    """Node-seconds: whole nodes for MPI tasks, a GPU's share of a node otherwise."""
    if res.num_nodes > 1:
        return res.num_nodes * seconds
    return seconds * max(res.gpus_per_node / gpus_per_node, res.ranks_per_node / 64)


def simulate(tasks, nodes: int, gpus: int, backfill: bool, window: int) -> dict:
    pool = NodePool([NodeSpec(f"n{i}", 64, tuple(str(g) for g in range(gpus)))
                     for i in range(nodes)])
    queue = deque(range(len(tasks)))
    running: list[tuple[float, int, object]] = []  # (end time, task, placement)
    now = 0.0
    placements = 0
    place_time = 0.0
    while queue or running:
        # Start what fits.
        started = []
        t0 = time.perf_counter()
        # Shapes that did not fit in this pass: an identical task, or a larger multi-node
        # one, cannot fit either (same outcome as trying, much faster to simulate).
        failed: set[tuple] = set()
        smallest_failed_multi = None
        for k, index in enumerate(queue):
            if k >= window:
                break
            res, seconds = tasks[index]
            shape = (res.num_nodes, res.ranks_per_node, res.threads_per_rank,
                     res.gpus_per_rank, res.node_packing_count)
            if shape in failed or (res.num_nodes > 1 and smallest_failed_multi is not None
                                   and res.num_nodes >= smallest_failed_multi):
                continue
            placed = pool.place(res)
            placements += 1
            if placed is None:
                if not backfill:
                    break
                failed.add(shape)
                if res.num_nodes > 1:
                    smallest_failed_multi = min(res.num_nodes, smallest_failed_multi or 1 << 30)
                continue
            heapq.heappush(running, (now + seconds, index, placed))
            started.append(index)
        place_time += time.perf_counter() - t0
        if started:
            gone = set(started)
            queue = deque(i for i in queue if i not in gone)
        if not running:
            raise RuntimeError("a task can never fit")
        # Advance to the next end (and every run ending then).
        now, index, placed = heapq.heappop(running)
        pool.release(placed)
        while running and running[0][0] <= now:
            pool.release(heapq.heappop(running)[2])
    total = sum(work_of(res, s, gpus) for res, s in tasks)
    return {"makespan": now, "utilization": total / (nodes * now),
            "us_per_placement": 1e6 * place_time / max(1, placements)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=512)
    ap.add_argument("--gpus-per-node", type=int, default=4)
    ap.add_argument("--gpu-tasks", type=int, default=12000)
    ap.add_argument("--mpi-tasks", type=int, default=400)
    ap.add_argument("--window", type=int, default=512,
                    help="how far down the queue one placement pass looks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--largest-first", action="store_true",
                    help="queue in decreasing size (as priority=num_nodes would claim them)")
    args = ap.parse_args()
    tasks = workload(random.Random(args.seed), args.gpu_tasks, args.mpi_tasks)
    if args.largest_first:
        tasks.sort(key=lambda t: -t[0].num_nodes)
    print(f"{args.nodes} nodes x {args.gpus_per_node} GPUs; {args.mpi_tasks} MPI tasks of "
          f"{'/'.join(map(str, MPI_SIZES))} nodes (2-20 min), {args.gpu_tasks} one-GPU tasks "
          f"(0.5-10 min), {'largest first' if args.largest_first else 'random order'}; "
          f"look-ahead {args.window}")
    rows = []
    for name, backfill in (("balsam_futures (backfill)", True), ("greedy first-come", False)):
        t0 = time.perf_counter()
        r = simulate(tasks, args.nodes, args.gpus_per_node, backfill, args.window)
        rows.append((name, r, time.perf_counter() - t0))
    print(f"{'policy':<28}{'utilization':>12}{'makespan':>12}{'us/placement':>14}{'sim s':>8}")
    for name, r, wall in rows:
        print(f"{name:<28}{r['utilization']:>11.1%}{r['makespan'] / 3600:>10.2f} h"
              f"{r['us_per_placement']:>14.1f}{wall:>8.1f}")
    ours, greedy = rows[0][1], rows[1][1]
    print(f"ratio vs greedy: {ours['utilization'] / greedy['utilization']:.2f}x; "
          f"target >= 95 %: {'met' if ours['utilization'] >= 0.95 else 'NOT met'}")


if __name__ == "__main__":
    main()
