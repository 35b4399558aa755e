"""Open MPI's ``mpirun``.

    mpirun -n N --map-by ppr:P:node --host h1:P,h2:P --bind-to none [-x K=V ...]
           [gpu wrapper --] command...

Options from the mpirun(1) man page, https://docs.open-mpi.org/en/v5.0.x/man-openmpi/man1/mpirun.1.html
(``ppr:N:resource`` places N processes per resource; ``host:slots`` gives each host P slots).
``--bind-to none`` always, not only when threads_per_rank > 1: Open MPI binds to cores by
default, a threaded rank would then run all its threads on one core, and two tasks packed on the
same node by separate mpirun calls would both bind their rank 0 to core 0. The trade-off is
losing NUMA locality that ``--map-by ppr:P:node:PE=T`` would give on a node the task owns alone.
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


class OpenMpiLauncher(MpiLauncher):
    name = "openmpi"

    default_executable = "mpirun"
    search_names = ("mpirun.openmpi", "orterun", "mpirun")

    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        command = check_command(command)
        ppn = layout.ranks_per_node
        args = [self.executable, "-n", str(layout.num_ranks), "--map-by", f"ppr:{ppn}:node",
                "--host", ",".join(f"{h}:{ppn}" for h in layout.hosts), "--bind-to", "none"]
        for key, value in check_env(env).items():
            args += ["-x", f"{key}={value}"]
        return [*args, *gpu_affinity_prefix(layout, self.python), *command]
