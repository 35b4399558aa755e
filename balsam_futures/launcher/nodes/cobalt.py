"""Cobalt (Theta, ThetaGPU): nodes from ``COBALT_NODEFILE`` or ``COBALT_PARTNAME``.

``COBALT_NODEFILE``, when set, lists host names (ThetaGPU: ``thetagpu06``) one per slot and
wins.  Otherwise ``COBALT_PARTNAME`` lists Cray node ids such as ``1-3,7``; on Theta node
``N`` is the host ``nid%05d`` (``nid00001``), the name aprun and the Cray tools use.

Cores: ``cores_per_node``, else the slot count in the node file.  ``COBALT_PARTNAME`` carries
no core counts and the job script runs on a service (MOM) node whose ``os.cpu_count()`` says
nothing about the compute nodes, so there ``cores_per_node`` is required.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import (
    NodeList,
    NodeSpec,
    Runner,
    build_specs,
    check_shape,
    count_slots,
    gpu_ids_for,
    read_node_file,
    require,
    specs_from_slots,
)


class CobaltNodes(NodeList):
    """Nodes of a Cobalt job (detected by ``COBALT_JOBID``)."""

    name = "cobalt"

    job_variables = ("COBALT_JOBID",)

    @classmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None,
                 runner: Runner | None = None) -> list[NodeSpec]:
        check_shape(cores_per_node, gpus_per_node)
        gpus = gpu_ids_for(environ, gpus_per_node) or ()
        if environ.get("COBALT_NODEFILE", "").strip():
            slots = count_slots(read_node_file(environ, "COBALT_NODEFILE"))
            return specs_from_slots(slots, cores_per_node, gpus)
        hosts = [f"nid{n:05d}" for n in parse_partname(require(environ, "COBALT_PARTNAME"))]
        if cores_per_node is None:
            raise ValueError("cores_per_node is required with COBALT_PARTNAME, which lists "
                             "node ids only (set COBALT_NODEFILE or pass cores_per_node)")
        return build_specs(hosts, [cores_per_node] * len(hosts), gpus)


def parse_partname(value: str) -> list[int]:
    """``"1-3,7"`` -> ``[1, 2, 3, 7]``; duplicates and descending ranges are errors."""
    ids: list[int] = []
    for item in value.split(","):
        lo, sep, hi = item.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"COBALT_PARTNAME={value!r}: bad item {item!r}, "
                             "expected N or LO-HI")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"COBALT_PARTNAME={value!r}: descending range {item!r}")
        ids.extend(range(first, last + 1))
    if len(set(ids)) != len(ids):
        raise ValueError(f"COBALT_PARTNAME={value!r} names a node twice")
    return ids
