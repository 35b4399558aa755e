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

import heapq
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

    @property
    def key(self) -> tuple[int, int, float]:
        """What placement looks at: nodes with equal keys are interchangeable (but for
        their index, the tie-break)."""
        return self.free_cores, len(self.free_gpus), self.occupancy

    def has_room(self, cores: int, gpus: int, share: float) -> bool:
        return (self.free_cores >= cores and len(self.free_gpus) >= gpus
                and self.occupancy + share <= 1.0 + _EPS)


class _IndexHeap:
    """A set of node indexes that gives its smallest in O(log n): a heap with lazy
    deletion (an index removed stays in the heap until it reaches the top)."""

    __slots__ = ("members", "heap")

    def __init__(self) -> None:
        self.members: set[int] = set()
        self.heap: list[int] = []

    def add(self, index: int) -> None:
        if index not in self.members:
            self.members.add(index)
            heapq.heappush(self.heap, index)

    def discard(self, index: int) -> None:
        self.members.discard(index)
        if len(self.heap) > 2 * len(self.members) + 64:  # bound the stale entries
            self.heap = sorted(self.members)

    def smallest(self) -> int:
        heap, members = self.heap, self.members
        while heap[0] not in members:
            heapq.heappop(heap)
        return heap[0]

    def take_smallest(self, count: int) -> list[int]:
        """Remove and return the ``count`` smallest (there must be that many)."""
        taken = []
        while len(taken) < count:
            index = heapq.heappop(self.heap)
            if index in self.members:
                self.members.discard(index)
                taken.append(index)
        return taken


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
        self._index()

    def _index(self) -> None:
        """Group the nodes by what placement looks at.  A decision then looks at each
        distinct (free cores, free GPUs, occupancy) once, not at every node: a few dozen
        groups for thousands of like nodes, so placing a task costs the same at 4,096 nodes
        as at 4 (a scan of every node was 1.8 ms per decision at 512)."""
        self._buckets: dict[tuple[int, int, float], _IndexHeap] = {}
        self._idle = _IndexHeap()
        for i, node in enumerate(self._nodes):
            self._bucket(node.key).add(i)
            if node.idle:
                self._idle.add(i)

    def _bucket(self, key: tuple[int, int, float]) -> _IndexHeap:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _IndexHeap()
        return bucket

    def _unfile(self, index: int) -> _Node:
        """Take a node out of its group before it changes (``_file`` puts it back)."""
        node = self._nodes[index]
        key = node.key
        bucket = self._buckets[key]
        bucket.discard(index)
        if not bucket.members:
            del self._buckets[key]
        return node

    def _file(self, index: int) -> None:
        node = self._nodes[index]
        self._bucket(node.key).add(index)
        if node.idle:
            self._idle.add(index)
        else:
            self._idle.discard(index)

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
        return len(self._idle.members)


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
            index = self._best_fit(cores, gpus, share)
            if index is None:
                return None
            node = self._unfile(index)
            node.free_cores -= cores
            node.occupancy += share
            node.runs += 1
            taken = tuple(node.free_gpus[:gpus])
            del node.free_gpus[:gpus]
            self._file(index)
            fraction = max(share, cores / node.spec.cores,
                           gpus / len(node.spec.gpus) if node.spec.gpus else 0.0)
            return Placement((index,), (node.spec.hostname,), (taken,), cores, share,
                             min(1.0, fraction))
        if len(self._idle.members) < count:
            return None
        idle = self._idle.take_smallest(count)
        gpu_sets = []
        for i in idle:
            node = self._unfile(i)
            gpu_sets.append(tuple(node.free_gpus))
            node.free_gpus = []
            node.free_cores = 0
            node.occupancy = 1.0
            node.runs = 1
            self._file(i)
        return Placement(tuple(idle), tuple(self._nodes[i].spec.hostname for i in idle),
                         tuple(gpu_sets), self.specs[idle[0]].cores, 1.0)

    def _best_fit(self, cores: int, gpus: int, share: float) -> int | None:
        """The node a single-node run goes to: the busiest with room (highest occupancy,
        then fewest free cores, then lowest index), so idle nodes stay whole for multi-node
        tasks.  One look per group of like nodes (see ``_index``)."""
        best_key, best = None, None
        for (free_cores, free_gpus, occupancy), bucket in self._buckets.items():
            if free_cores < cores or free_gpus < gpus or occupancy + share > 1.0 + _EPS:
                continue
            index = bucket.smallest()
            key = (occupancy, -free_cores, -index)
            if best_key is None or key > best_key:
                best_key, best = key, index
        return best

    def release(self, placement: Placement) -> None:
        for index, gpus in zip(placement.nodes, placement.gpus):
            node = self._unfile(index)
            if len(placement.nodes) > 1:  # whole nodes
                node.free_cores = node.spec.cores
                node.free_gpus = list(node.spec.gpus)
                node.occupancy = 0.0
                node.runs = 0
                self._file(index)
                continue
            node.free_cores += placement.cores
            node.occupancy = max(0.0, node.occupancy - placement.share)
            node.runs -= 1
            # Keep the node's own GPU order, so the next task gets the lowest free ids.
            if gpus:
                free = set(node.free_gpus) | set(gpus)
                node.free_gpus = [g for g in node.spec.gpus if g in free]
            self._file(index)

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
        sim._index()
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
