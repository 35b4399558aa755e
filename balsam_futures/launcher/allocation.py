"""What a launcher runs on: its nodes, and how many warm workers that calls for.

The command line gathers the options; the decisions are here, next to the launcher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .nodes import NodeSpec, detect_node_list, discover_nodes

#: In mpi mode workers only wait for MPI launches: at most this many per node.
MPI_WORKERS_PER_NODE = 16


def find_allocation(platform: str | None = None, *, num_nodes: int | None = None,
                    cores_per_node: int | None = None, gpus_per_node: int | None = None,
                    environ: Mapping[str, str] | None = None
                    ) -> tuple[list[NodeSpec] | None, bool]:
    """(nodes, whether they are this machine's virtual nodes).

    Nodes are None for a plain local launcher with no shape given: one node, this machine,
    with one core per worker (``LauncherConfig.gpu_ids`` gives its GPUs).
    """
    environ = os.environ if environ is None else environ
    name = platform or detect_node_list(environ).name
    local = name == "local"
    if local and num_nodes is None and cores_per_node is None and gpus_per_node is None:
        return None, True
    shape = {"cores_per_node": cores_per_node, "gpus_per_node": gpus_per_node}
    if local:
        shape["nodes"] = num_nodes or 1
    elif num_nodes is not None:
        raise ValueError(f"virtual nodes (--nodes) are for the local platform; {name} says how "
                         "many nodes the allocation has")
    return discover_nodes(environ, name=name, **shape), local


def default_workers(nodes: list[NodeSpec] | None, local: bool, job_mode: str,
                    agents: bool | None) -> int:
    """Warm workers of the launcher's head: one per core of its node (of every virtual node
    when there are no agents to serve the others); in mpi mode, enough to wait on the MPI
    launches."""
    if nodes is None:
        return os.cpu_count() or 1
    if job_mode == "mpi":
        return min(sum(n.cores for n in nodes), MPI_WORKERS_PER_NODE * len(nodes))
    if local and not agents:
        return sum(n.cores for n in nodes)
    return nodes[0].cores
