"""PBS Pro (Polaris, Aurora...): nodes from ``PBS_NODEFILE``.

``PBS_NODEFILE`` holds one line per MPI rank slot, so a host repeats once per ``mpiprocs``
of its chunk; hosts keep the order of their first line.  Host names are kept as written
(Polaris: ``x3005c0s13b0n0.hsn.cm.polaris.alcf.anl.gov``); mpiexec accepts them as they are.

Cores: ``cores_per_node``, else the number of lines for the host.  With the default
``mpiprocs=1`` (how Polaris jobs are usually requested) every host appears once and that
count is 1, so a machine shape should pass ``cores_per_node``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import (
    NodeList,
    NodeSpec,
    Runner,
    check_shape,
    count_slots,
    gpu_ids_for,
    read_node_file,
    specs_from_slots,
)


class PBSNodes(NodeList):
    """Nodes of a PBS job (detected by ``PBS_JOBID``)."""

    name = "pbs"

    job_variables = ("PBS_JOBID",)

    @classmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None,
                 runner: Runner | None = None) -> list[NodeSpec]:
        check_shape(cores_per_node, gpus_per_node)
        slots = count_slots(read_node_file(environ, "PBS_NODEFILE"))
        return specs_from_slots(slots, cores_per_node, gpu_ids_for(environ, gpus_per_node) or ())
