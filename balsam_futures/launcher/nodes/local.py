"""Local: a laptop, workstation or one node without a batch system (the fallback).

``nodes=N`` virtual nodes, all on this machine: ``localhost`` when N is 1, else ``local0`` to
``local{N-1}`` (distinct names so packing can tell them apart; they all run here).

Cores: ``cores_per_node``, else ``os.cpu_count()`` at call time.  GPUs: ``gpus_per_node``, else
the visible-devices variables (``base.py``), else the ``GPU n:`` lines of ``nvidia-smi -L``,
else none (also when nvidia-smi is missing or fails: a machine without a driver has no GPUs
to give).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from .base import NodeList, NodeSpec, Runner, build_specs, check_shape, gpu_ids_for, run_command

NVIDIA_SMI_ARGV = ("nvidia-smi", "-L")


class LocalNodes(NodeList):
    """This machine, as one or more virtual nodes (always detected)."""

    name = "local"

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return True

    @classmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None, runner: Runner | None = None,
                 nodes: int = 1) -> list[NodeSpec]:
        check_shape(cores_per_node, gpus_per_node)
        if isinstance(nodes, bool) or not isinstance(nodes, int):
            raise TypeError(f"nodes must be an int, not {type(nodes).__name__}")
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, not {nodes}")
        hosts = ["localhost"] if nodes == 1 else [f"local{i}" for i in range(nodes)]
        cores = cores_per_node or os.cpu_count() or 1
        gpus = gpu_ids_for(environ, gpus_per_node)
        if gpus is None:
            gpus = nvidia_smi_gpu_ids(runner or run_command)
        return build_specs(hosts, [cores] * nodes, gpus)


def nvidia_smi_gpu_ids(runner: Runner) -> tuple[str, ...]:
    """GPU indexes from ``nvidia-smi -L`` (``GPU 0: NVIDIA H100 ... (UUID: GPU-...)``).

    MIG instances are indented ``MIG ...`` lines under their GPU and are not counted.
    """
    try:
        text = runner(NVIDIA_SMI_ARGV)
    except (OSError, subprocess.SubprocessError):
        return ()
    ids = []
    for line in text.splitlines():
        if line.startswith("GPU "):
            index = line[4:].split(":", 1)[0].strip()
            ids.append(index if index.isdigit() else str(len(ids)))
    return tuple(ids)
