"""The execution profile: utilization and throughput from where and when each run went.

Launchers record one row per run (``bf_runs``: hosts, GPU ids, the share of each node, start
and end) and their own nodes (``bf_launchers.info``).  From those:

- node utilization over time: node-equivalents busy / nodes held by live launchers;
- GPU utilization over time: GPUs held by runs / GPUs of live launchers;
- throughput: runs ending per second.

``plot_profile`` draws both curves to a PNG with matplotlib (the ``plot`` extra), imported
only there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Profile:
    """Utilization and throughput in ``len(times)`` equal bins from ``start`` to ``end``."""

    start: float
    end: float
    times: list[float] = field(default_factory=list)  # bin starts (epoch seconds)
    busy_nodes: list[float] = field(default_factory=list)  # node-equivalents in use
    total_nodes: list[float] = field(default_factory=list)  # nodes of live launchers
    busy_gpus: list[float] = field(default_factory=list)
    total_gpus: list[float] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # runs that ended in the bin
    runs: int = 0

    @property
    def bin_seconds(self) -> float:
        return (self.end - self.start) / max(1, len(self.times))

    # Busy is capped by held in every bin: a run recorded past its launcher's last heartbeat
    # (or by a launcher with no node record) must not read as more than 100 %.
    def node_utilization(self) -> list[float]:
        return [min(b, t) / t if t else 0.0 for b, t in zip(self.busy_nodes, self.total_nodes)]

    def gpu_utilization(self) -> list[float]:
        return [min(b, t) / t if t else 0.0 for b, t in zip(self.busy_gpus, self.total_gpus)]

    def mean_node_utilization(self) -> float:
        held = sum(self.total_nodes)
        busy = sum(min(b, t) for b, t in zip(self.busy_nodes, self.total_nodes))
        return busy / held if held else 0.0

    def mean_gpu_utilization(self) -> float:
        held = sum(self.total_gpus)
        busy = sum(min(b, t) for b, t in zip(self.busy_gpus, self.total_gpus))
        return busy / held if held else 0.0

    def throughput(self) -> float:
        """Runs finished per second over the whole span."""
        span = self.end - self.start
        return sum(self.finished) / span if span > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"runs": self.runs, "start": self.start, "end": self.end,
                "seconds": self.end - self.start, "tasks_per_second": self.throughput(),
                "node_utilization": self.mean_node_utilization(),
                "gpu_utilization": self.mean_gpu_utilization()}


def _spread(values: list[float], start: float, width: float, a: float, b: float,
            weight: float) -> None:
    """Add ``weight`` x (overlap of [a, b] with each bin) / bin width to ``values``."""
    if b <= a or width <= 0:
        return
    first = max(0, int((a - start) // width))
    last = min(len(values) - 1, int((b - start) // width))
    for i in range(first, last + 1):
        lo, hi = start + i * width, start + (i + 1) * width
        overlap = min(b, hi) - max(a, lo)
        if overlap > 0:
            values[i] += weight * overlap / width


def _node_shapes(launchers: Sequence[dict[str, Any]]) -> dict[tuple[int, str], tuple[int, int]]:
    """(cores, GPUs) of each node, by (launcher id, hostname), from the launchers' records."""
    shapes = {}
    for launcher in launchers:
        for n in launcher["info"].get("nodes") or []:
            shapes[(launcher.get("id"), n.get("hostname"))] = (int(n.get("cores") or 0),
                                                               len(n.get("gpus") or ()))
    return shapes


def run_node_share(run: dict[str, Any], shapes: dict[tuple[int, str], tuple[int, int]]
                   ) -> float:
    """Node-equivalents a run held: on each of its nodes, the share that binds (its packing
    share, its cores of the node's cores, or its GPUs of the node's GPUs), counted once and
    never more than the whole node."""
    hosts = run.get("hosts") or []
    gpus = run.get("gpus") or []
    if not hosts:
        return min(1.0, run["node_share"]) * run["num_nodes"]
    total = 0.0
    for k, host in enumerate(hosts):
        cores, node_gpus = shapes.get((run.get("launcher_id"), host), (0, 0))
        share = run["node_share"]
        if cores:
            share = max(share, run["cores"] / cores)
        if node_gpus and k < len(gpus):
            share = max(share, len(gpus[k]) / node_gpus)
        total += min(1.0, share)
    return total


def build_profile(runs: Sequence[dict[str, Any]], launchers: Sequence[dict[str, Any]],
                  start: float | None = None, end: float | None = None,
                  bins: int = 100) -> Profile:
    """Bin ``runs`` (``SqlStore.list_runs``) against the resources of ``launchers``
    (``SqlStore.list_launchers``) between ``start`` and ``end`` (default: the runs' span)."""
    if start is None:
        start = min((r["started_at"] for r in runs), default=0.0)
    if end is None:
        end = max((r["ended_at"] for r in runs), default=start)
    bins = max(1, bins if end > start else 1)
    prof = Profile(start, end, runs=len(runs))
    width = (end - start) / bins
    prof.times = [start + i * width for i in range(bins)]
    for name in ("busy_nodes", "total_nodes", "busy_gpus", "total_gpus"):
        setattr(prof, name, [0.0] * bins)
    prof.finished = [0] * bins
    shapes = _node_shapes(launchers)
    for r in runs:
        _spread(prof.busy_nodes, start, width, r["started_at"], r["ended_at"],
                run_node_share(r, shapes))
        _spread(prof.busy_gpus, start, width, r["started_at"], r["ended_at"],
                sum(len(g) for g in r["gpus"]))
        if start <= r["ended_at"] <= end and width > 0:
            prof.finished[min(bins - 1, int((r["ended_at"] - start) // width))] += 1
        elif width == 0:
            prof.finished[0] += 1
    for launcher in launchers:
        nodes = launcher["info"].get("nodes") or []
        if not nodes:
            continue
        alive_to = launcher["heartbeat_at"] if launcher["state"] != "RUNNING" else \
            max(launcher["heartbeat_at"], end)
        _spread(prof.total_nodes, start, width, launcher["started_at"], alive_to, len(nodes))
        _spread(prof.total_gpus, start, width, launcher["started_at"], alive_to,
                sum(len(n.get("gpus", ())) for n in nodes))
    return prof


def store_profile(store: Any, start: float | None = None, end: float | None = None,
                  bins: int = 100) -> Profile:
    """The profile of everything ``store`` recorded between ``start`` and ``end``."""
    runs = store.list_runs(start if start is not None else 0.0,
                           end if end is not None else math.inf)
    return build_profile(runs, store.list_launchers(), start, end, bins)


def plot_profile(prof: Profile, path: str) -> None:
    """Write node and GPU utilization and throughput over time to a PNG at ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'balsam_futures[plot]'") from None
    t = [x - prof.start for x in prof.times]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.step(t, [100 * u for u in prof.node_utilization()], where="post", label="nodes")
    if any(prof.total_gpus):
        top.step(t, [100 * u for u in prof.gpu_utilization()], where="post", label="GPUs")
    top.set_ylabel("utilization (%)")
    top.set_ylim(0, 105)
    top.legend(loc="lower right")
    top.set_title(f"{prof.runs} runs, {prof.mean_node_utilization():.0%} node utilization")
    width = prof.bin_seconds or 1.0
    bottom.step(t, [n / width for n in prof.finished], where="post")
    bottom.set_ylabel("tasks finished / s")
    bottom.set_xlabel("seconds since the first run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
