"""Slurm: nodes from ``SLURM_JOB_NODELIST``, cores from ``SLURM_JOB_CPUS_PER_NODE``.

Variables are those of an sbatch/salloc job (https://slurm.schedmd.com/sbatch.html, "OUTPUT
ENVIRONMENT VARIABLES").  The batch script runs on the first allocated node, so the GPU
variables describe that node; the allocation is taken to be homogeneous in GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import (
    NodeList,
    NodeSpec,
    Runner,
    build_specs,
    check_shape,
    gpu_ids_for,
    parse_count,
    require,
)
from .hostlist import expand_hostlist

# "72(x2),36": 72 CPUs on each of 2 nodes, then 36 on one (sbatch(1), SLURM_JOB_CPUS_PER_NODE).
_CPUS_ITEM = re.compile(r"(\d+)(?:\(x(\d+)\))?")


class SlurmNodes(NodeList):
    """Nodes of a Slurm job (detected by ``SLURM_JOB_ID``)."""

    name = "slurm"

    job_variables = ("SLURM_JOB_ID",)

    @classmethod
    def this_node(cls, environ: Mapping[str, str]) -> str:
        # The node list holds Slurm's NodeName, which need not be the host name; slurmd tells
        # each job step which node it is on.
        name = environ.get("SLURMD_NODENAME")
        return name.split(".")[0] if name else super().this_node(environ)

    @classmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None,
                 runner: Runner | None = None) -> list[NodeSpec]:
        check_shape(cores_per_node, gpus_per_node)
        # SLURM_NODELIST is the older name, still set by Slurm for compatibility.
        variable = "SLURM_JOB_NODELIST" if environ.get("SLURM_JOB_NODELIST") else "SLURM_NODELIST"
        if not environ.get(variable, "").strip():
            raise ValueError("neither SLURM_JOB_NODELIST nor SLURM_NODELIST is set in the "
                             "job's environment")
        value = environ[variable].strip()
        try:
            hosts = expand_hostlist(value)
        except ValueError as exc:
            raise ValueError(f"{variable}={value!r}: {exc}") from exc
        if cores_per_node is not None:
            cores = [cores_per_node] * len(hosts)
        else:
            cores = parse_cpus_per_node(require(environ, "SLURM_JOB_CPUS_PER_NODE"), len(hosts))
        return build_specs(hosts, cores, _gpu_ids(environ, gpus_per_node))


def parse_cpus_per_node(value: str, num_nodes: int) -> list[int]:
    """``"64(x4),32"`` -> ``[64, 64, 64, 64, 32]``, checked against the node count."""
    cores: list[int] = []
    for item in value.split(","):
        match = _CPUS_ITEM.fullmatch(item.strip())
        if not match:
            raise ValueError(f"SLURM_JOB_CPUS_PER_NODE={value!r}: bad item {item!r}, "
                             "expected N or N(xR)")
        count, repeat = int(match[1]), int(match[2] or 1)
        if count < 1 or repeat < 1:
            raise ValueError(f"SLURM_JOB_CPUS_PER_NODE={value!r}: item {item!r} must be >= 1")
        cores.extend([count] * repeat)
    if len(cores) != num_nodes:
        raise ValueError(f"SLURM_JOB_CPUS_PER_NODE={value!r} describes {len(cores)} nodes, "
                         f"but the node list has {num_nodes}")
    return cores


def _gpu_ids(environ: Mapping[str, str], gpus_per_node: int | None) -> tuple[str, ...]:
    """gpus_per_node, else the visible-devices ids Slurm sets (relative to the job's cgroup,
    which is what a child process must use), else SLURM_GPUS_ON_NODE as a count, else the
    ids in SLURM_JOB_GPUS, else none."""
    ids = gpu_ids_for(environ, gpus_per_node)
    if ids is not None:
        return ids
    if environ.get("SLURM_GPUS_ON_NODE", "").strip():
        count = parse_count(environ["SLURM_GPUS_ON_NODE"], "SLURM_GPUS_ON_NODE")
        return tuple(str(i) for i in range(count))
    job_gpus = environ.get("SLURM_JOB_GPUS", "").strip()
    if job_gpus:
        ids = tuple(part.strip() for part in job_gpus.split(","))
        if not all(ids):
            raise ValueError(f"SLURM_JOB_GPUS={job_gpus!r} has an empty GPU id")
        return ids
    return ()
