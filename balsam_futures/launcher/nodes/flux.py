"""Flux: nodes from ``FLUX_JOB_NODELIST`` or ``flux resource list``.

Inside ``flux batch``/``flux alloc`` the job script runs in a Flux subinstance that owns
exactly the job's resources, so ``flux resource list`` there lists the allocation.  Its
default output has one line per state (free, allocated, down; flux-resource(1)), and a node
partly in use shows up in both ``free`` and ``allocated``; we ask for those two states
only, skip blank lines and a ``NODELIST`` header, and keep each node once.  Node lists use
the Slurm hostlist syntax (Flux RFC 29).

Cores: ``cores_per_node``, else ``os.cpu_count()`` of this node at call time: the instance's
first broker, where the script runs, is on an allocated node.  GPUs follow the shared rule in
``base.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .base import NodeList, NodeSpec, Runner, build_specs, check_shape, gpu_ids_for, run_command
from .hostlist import expand_hostlist

RESOURCE_LIST_ARGV = ("flux", "resource", "list", "--no-header", "--states=free,allocated",
                      "-o", "{nodelist}")


class FluxNodes(NodeList):
    """Nodes of a Flux instance (detected by ``FLUX_URI`` or ``FLUX_JOB_ID``)."""

    name = "flux"

    job_variables = ("FLUX_URI", "FLUX_JOB_ID")

    @classmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None,
                 runner: Runner | None = None) -> list[NodeSpec]:
        check_shape(cores_per_node, gpus_per_node)
        nodelist = environ.get("FLUX_JOB_NODELIST", "").strip()
        if nodelist:
            try:
                hosts = expand_hostlist(nodelist)
            except ValueError as exc:
                raise ValueError(f"FLUX_JOB_NODELIST={nodelist!r}: {exc}") from exc
        else:
            hosts = parse_resource_list((runner or run_command)(RESOURCE_LIST_ARGV))
        cores = cores_per_node or os.cpu_count() or 1
        return build_specs(hosts, [cores] * len(hosts),
                           gpu_ids_for(environ, gpus_per_node) or ())


def parse_resource_list(text: str) -> list[str]:
    """Host names from ``flux resource list -o {nodelist}`` output, each once, in order."""
    hosts: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line == "NODELIST":
            continue
        try:
            hosts.update(dict.fromkeys(expand_hostlist(line)))
        except ValueError as exc:
            raise ValueError(f"`{' '.join(RESOURCE_LIST_ARGV)}` printed {line!r}: {exc}") from exc
    if not hosts:
        raise ValueError(f"`{' '.join(RESOURCE_LIST_ARGV)}` listed no nodes: {text!r}")
    return list(hosts)
