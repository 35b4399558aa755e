"""Slurm's ``srun`` (a job step inside the pilot's allocation).

    srun -n N --ntasks-per-node P --nodes M --nodelist h1,h2 --cpus-per-task T --overlap
         [--gpus-per-task G] [--export=ALL,K=V,...] command...

Options from srun(1), https://slurm.schedmd.com/srun.html. Slurm chooses and binds the GPUs
itself (``--gpus-per-task``, Slurm 19.05+), so ``layout.gpu_ids`` is not used here.
``--overlap`` (Slurm 20.11+): the launcher packs several steps on a node itself, and its
per-node agents run as a step holding each node's CPUs; without it, Slurm would make each
task's step wait for CPUs another step holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import MpiLauncher, RankLayout, check_command, check_env


class SrunLauncher(MpiLauncher):
    name = "srun"

    default_executable = "srun"

    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        command = check_command(command)
        args = [self.executable, "-n", str(layout.num_ranks),
                "--ntasks-per-node", str(layout.ranks_per_node),
                "--nodes", str(layout.num_nodes), "--nodelist", ",".join(layout.hosts),
                "--cpus-per-task", str(layout.threads_per_rank), "--overlap"]
        if layout.gpus_per_rank:
            args += ["--gpus-per-task", str(layout.gpus_per_rank)]
        env = check_env(env)
        if env:
            # --export is one comma-separated list with no escape for a comma inside a value.
            bad = sorted(k for k, v in env.items() if "," in v)
            if bad:
                raise ValueError(f"srun --export cannot carry commas in values: {', '.join(bad)}")
            args.append("--export=" + ",".join(["ALL", *(f"{k}={v}" for k, v in env.items())]))
        return [*args, *command]
