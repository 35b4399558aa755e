"""MPICH's hydra ``mpiexec``.

    mpiexec -n N -ppn P -hosts h1,h2 [-genv K V ...] [gpu wrapper --] command...

Options as listed by ``mpiexec -help`` of hydra 5.0 (the ``mpich`` wheel) and the MPICH wiki,
https://wiki.mpich.org/mpich/index.php/Using_the_Hydra_Process_Manager
No binding flags: hydra binds nothing by default, and a pilot that packs several tasks on one
node would otherwise pin every task's rank 0 to the same core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import (
    MpiLauncher,
    RankLayout,
    check_command,
    check_env,
    gpu_affinity_prefix,
)


class MpichLauncher(MpiLauncher):
    name = "mpich"

    default_executable = "mpiexec"
    search_names = ("mpiexec.hydra", "mpiexec.mpich", "mpiexec")

    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        command = check_command(command)
        args = [self.executable, "-n", str(layout.num_ranks), "-ppn", str(layout.ranks_per_node),
                "-hosts", ",".join(layout.hosts)]
        for key, value in check_env(env).items():
            # -genv takes name and value as two arguments, so values need no quoting.
            args += ["-genv", key, value]
        return [*args, *gpu_affinity_prefix(layout, self.python), *command]
