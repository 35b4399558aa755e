"""Cray ALPS ``aprun`` (Theta-era XC systems).

    aprun -n N -N P -d T -cc depth -L 12,13 [-e K=V ...] [gpu wrapper --] command...

Options from "Run Applications Using the aprun Command",
https://www.hpe.com/psnow/resources/ebooks/a00114008en_us_v2/Run_Applications_Using_the_aprun_Command.html
(-n PEs, -N PEs per node, -d depth, -cc binding, -L candidate node list, -e VAR=value).
``-L`` takes numeric node ids, the number in a ``nidNNNNN`` host name, not host names.
``-cc depth`` binds each PE and its threads to ``-d`` consecutive CPUs, as in ALCF's Theta guide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .base import (
    MpiLauncher,
    RankLayout,
    check_command,
    check_env,
    gpu_affinity_prefix,
)

_NID = re.compile(r"nid0*(\d+)")


def node_id(host: str) -> str:
    """``nid00012`` -> ``12``; a bare number is taken as the id already."""
    match = _NID.fullmatch(host) or re.fullmatch(r"0*(\d+)", host)
    if match is None:
        raise ValueError(f"hosts must be ALPS node names like nid00012 for aprun, got {host!r}")
    return match.group(1)


class AprunLauncher(MpiLauncher):
    name = "aprun"

    default_executable = "aprun"

    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        command = check_command(command)
        args = [self.executable, "-n", str(layout.num_ranks), "-N", str(layout.ranks_per_node),
                "-d", str(layout.threads_per_rank), "-cc", "depth",
                "-L", ",".join(node_id(h) for h in layout.hosts)]
        for key, value in check_env(env).items():
            args += ["-e", f"{key}={value}"]
        return [*args, *gpu_affinity_prefix(layout, self.python), *command]
