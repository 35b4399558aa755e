"""Packing: which nodes, cores and GPUs of the allocation each task gets.

    NodePool(nodes)                 one entry per node: free cores, free GPU ids, occupancy
      .place(need) -> Placement     reserve room for one task now, or None
      .release(placement)           give it back when the run ends
      .never_fits(need) -> reason   a task this allocation can never run, said in words
      .fit_claim(rows, depth)       which claimable rows to take (inside the claim transaction)

A task needs, on each of ``num_nodes`` nodes, ``ranks_per_node * threads_per_rank`` cores,
``ranks_per_node * gpus_per_rank`` GPUs, and ``1 / node_packing_count`` of the node (Balsam's
occupancy: at most ``node_packing_count`` such tasks share a node; 0 sets no such limit).  A
multi-node task takes its nodes whole, as MPI jobs expect.  A single-node task goes to the
busiest node that still has room (best fit), so whole nodes stay free for the multi-node tasks
behind it.

Placing tasks in priority order and skipping the ones that do not fit *now* is the backfill:
small tasks run around a large one that waits for its nodes.  A node is never over-committed:
every reservation checks cores, GPUs and occupancy together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .nodes import NodeSpec

#: Occupancy is a sum of 1/n fractions; this much slack keeps 3 x 1/3 within one node.
_EPS = 1e-9


class Need(Protocol):
    """Anything with the resource fields of a task (Resources, ClaimedTask, a claim row)."""

    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    node_packing_count: int


@dataclass(frozen=True)
class Placement:
    """Where one run goes: node indexes in the pool, host names, GPU ids on each node."""

    nodes: tuple[int, ...]
    hosts: tuple[str, ...]
    gpus: tuple[tuple[str, ...], ...]
    cores: int  # per node
    share: float  # occupancy charged per node (0 without a node_packing_count)
    #: How much of each node the run holds, the largest of its occupancy, core and GPU
    #: fractions: what utilization counts.
    fraction: float = 1.0

    def as_record(self) -> dict:
        """The JSON-able form kept in the execution profile (``bf_runs``)."""
        return {"hosts": self.hosts, "gpus": self.gpus, "cores": self.cores,
                "share": self.fraction}


class _Node:
    __slots__ = ("spec", "free_cores", "free_gpus", "occupancy", "runs")

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.free_cores = spec.cores
        self.free_gpus = list(spec.gpus)
        self.occupancy = 0.0
        self.runs = 0

    @property
    def idle(self) -> bool:
        return self.runs <= 0

    def has_room(self, cores: int, gpus: int, share: float) -> bool:
        return (self.free_cores >= cores and len(self.free_gpus) >= gpus
                and self.occupancy + share <= 1.0 + _EPS)


def _shape(need: Need) -> tuple[int, int, int, float]:
    """(nodes, cores per node, GPUs per node, occupancy per node) of a need."""
    if need.num_nodes > 1:
        return need.num_nodes, 0, 0, 1.0  # whole nodes: cores and GPUs all go with them
    share = 1.0 / need.node_packing_count if need.node_packing_count else 0.0
    return (1, need.ranks_per_node * need.threads_per_rank,
            need.ranks_per_node * need.gpus_per_rank, share)


class NodePool:
    """The free resources of a launcher's nodes."""

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        if not nodes:
            raise ValueError("a launcher needs at least one node")
        self.specs = tuple(nodes)
        self._nodes = [_Node(s) for s in nodes]

    # -- what there is -----------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return len(self._nodes)

    @property
    def total_gpus(self) -> int:
        return sum(len(s.gpus) for s in self.specs)

    @property
    def total_cores(self) -> int:
        return sum(s.cores for s in self.specs)

    def idle_nodes(self) -> int:
        return sum(1 for n in self._nodes if n.idle)


    def never_fits(self, need: Need) -> str | None:
        """Why a task can never run on these nodes, or None if it can."""
        count, cores, gpus, _share = _shape(need)
        if count > len(self._nodes):
            return (f"it needs {count} nodes and this launcher has {len(self._nodes)}")
        if count == 1:
            if not any(s.cores >= cores for s in self.specs):
                most = max(s.cores for s in self.specs)
                return (f"it needs {cores} cores on one node (ranks_per_node x "
                        f"threads_per_rank) and the largest node has {most}")
            if not any(s.cores >= cores and len(s.gpus) >= gpus for s in self.specs):
                most = max(len(s.gpus) for s in self.specs)
                return (f"it needs {gpus} GPUs on one node (ranks_per_node x gpus_per_rank) "
                        f"and the largest node has {most}")
        elif need.gpus_per_rank * need.ranks_per_node > min(len(s.gpus) for s in self.specs):
            return (f"it needs {need.ranks_per_node * need.gpus_per_rank} GPUs on each of "
                    f"{count} nodes and some nodes have fewer")
        return None

    # -- reserving ---------------------------------------------------------------------------

    def place(self, need: Need) -> Placement | None:
        """Reserve room for one run now, or return None if it does not fit at the moment."""
        count, cores, gpus, share = _shape(need)
        if count == 1:
            if len(self._nodes) == 1:  # a launcher of one node (the executor's): no choice
                if not self._nodes[0].has_room(cores, gpus, share):
                    return None
                index = 0
            else:
                fitting = [i for i, n in enumerate(self._nodes)
                           if n.has_room(cores, gpus, share)]
                if not fitting:
                    return None
                # Best fit: the busiest node with room, so idle nodes stay whole.
                index = max(fitting, key=lambda i: (self._nodes[i].occupancy,
                                                    -self._nodes[i].free_cores, -i))
            node = self._nodes[index]
            node.free_cores -= cores
            node.occupancy += share
            node.runs += 1
            taken = tuple(node.free_gpus[:gpus])
            del node.free_gpus[:gpus]
            fraction = max(share, cores / node.spec.cores,
                           gpus / len(node.spec.gpus) if node.spec.gpus else 0.0)
            return Placement((index,), (node.spec.hostname,), (taken,), cores, share,
                             min(1.0, fraction))
        idle = [i for i, n in enumerate(self._nodes) if n.idle][:count]
        if len(idle) < count:
            return None
        gpu_sets = []
        for i in idle:
            node = self._nodes[i]
            gpu_sets.append(tuple(node.free_gpus))
            node.free_gpus = []
            node.free_cores = 0
            node.occupancy = 1.0
            node.runs = 1
        return Placement(tuple(idle), tuple(self._nodes[i].spec.hostname for i in idle),
                         tuple(gpu_sets), self.specs[idle[0]].cores, 1.0)

    def release(self, placement: Placement) -> None:
        for index, gpus in zip(placement.nodes, placement.gpus):
            node = self._nodes[index]
            if len(placement.nodes) > 1:  # whole nodes
                node.free_cores = node.spec.cores
                node.free_gpus = list(node.spec.gpus)
                node.occupancy = 0.0
                node.runs = 0
                continue
            node.free_cores += placement.cores
            node.occupancy = max(0.0, node.occupancy - placement.share)
            node.runs -= 1
            # Keep the node's own GPU order, so the next task gets the lowest free ids.
            free = set(node.free_gpus) | set(gpus)
            node.free_gpus = [g for g in node.spec.gpus if g in free]

    # -- claiming ----------------------------------------------------------------------------

    def fit_claim(self, needs: Iterable[Need], pending: Iterable[Need] = (),
                  depth: int = 1) -> list[int]:
        """Indexes of ``needs`` (claim order) that the launcher can start soon.

        Simulated on a copy of the free resources: first the ``pending`` tasks (claimed, not
        yet started) take their room, then each need in order takes room if it fits, else is
        skipped (left in the store for another launcher, or for later).  ``depth`` lets each
        node hold that many rounds of single-node work at once: a short backlog per slot keeps
        tiny tasks flowing without a store round trip per task.  Multi-node tasks always need
        idle nodes now.
        """
        if len(self._nodes) == 1:
            return self._fit_one_node(needs, pending, depth)
        return self._fit_simulated(needs, pending, depth)

    def _fit_simulated(self, needs: Iterable[Need], pending: Iterable[Need],
                       depth: int) -> list[int]:
        """``fit_claim`` by placing everything on a copy of the pool."""
        sim = NodePool.__new__(NodePool)
        sim.specs = self.specs
        sim._nodes = []
        for n in self._nodes:
            copy = _Node(n.spec)
            copy.free_cores = n.free_cores + n.spec.cores * (depth - 1)
            copy.free_gpus = list(n.free_gpus) + list(n.spec.gpus) * (depth - 1)
            copy.occupancy = n.occupancy - (depth - 1)
            copy.runs = n.runs
            sim._nodes.append(copy)
        # Multi-node tasks need nodes that are really idle now: depth must not invent them.
        idle_left = self.idle_nodes()
        for need in pending:
            if need.num_nodes > 1 and depth > 1:
                idle_left -= need.num_nodes
            else:
                sim.place(need)
        taken = []
        # A shape that did not fit will not fit again in this pass: most claims are of many
        # tasks of one shape, so this keeps a claim O(candidates), not O(candidates x nodes).
        full: set[tuple[int, int, int, float]] = set()
        for i, need in enumerate(needs):
            if need.num_nodes > 1 and depth > 1:
                if idle_left >= need.num_nodes:
                    idle_left -= need.num_nodes
                    taken.append(i)
                continue
            shape = _shape(need)
            if shape in full:
                continue
            if sim.place(need) is not None:
                taken.append(i)
            else:
                full.add(shape)
        return taken

    def _fit_one_node(self, needs: Iterable[Need], pending: Iterable[Need],
                      depth: int) -> list[int]:
        """``fit_claim`` for a pool of one node, by arithmetic: what the simulation would
        decide, without a placement per claimed and pending task (claims of tiny tasks made
        that a tenth of the launcher's time)."""
        node = self._nodes[0]
        cores = node.free_cores + node.spec.cores * (depth - 1)
        gpus = len(node.free_gpus) + len(node.spec.gpus) * (depth - 1)
        occupancy = node.occupancy - (depth - 1)
        for need in pending:  # as the simulation places them: those that fit
            count, c, g, share = _shape(need)
            if count == 1 and cores >= c and gpus >= g and occupancy + share <= 1.0 + _EPS:
                cores, gpus, occupancy = cores - c, gpus - g, occupancy + share
        taken = []
        for i, need in enumerate(needs):
            count, c, g, share = _shape(need)
            if count == 1 and cores >= c and gpus >= g and occupancy + share <= 1.0 + _EPS:
                cores, gpus, occupancy = cores - c, gpus - g, occupancy + share
                taken.append(i)
        return taken
