"""HPE PALS ``mpiexec`` on ALCF Polaris and Aurora.

    mpiexec -n N --ppn P --hosts h1,h2 --depth T --cpu-bind depth [--env K=V ...]
            [python -m ...gpu_affinity --per-rank G --ids 3,2,1,0 --] command...

Options from ALCF "Running Jobs on Polaris" (-n, --ppn, --depth, --cpu-bind depth,
--env K=V), https://docs.alcf.anl.gov/polaris/running-jobs/ ; ``--hosts`` is what Balsam's
``app_run/polaris.py`` passes (the ALCF page shows only ``--hostfile``).

PALS does not bind ranks to GPUs. ALCF's set_affinity_gpu_polaris.sh sets CUDA_VISIBLE_DEVICES
from PMI_LOCAL_RANK and hands out GPUs in reverse order, because with ``--cpu-bind depth`` local
rank 0 gets the first cores, which sit closest to GPU 3 (Polaris device affinity):
https://docs.alcf.anl.gov/polaris/running-jobs/using-gpus/#binding-mpi-ranks-to-gpus
``gpu_affinity.py`` does the same in Python. Pass ``reverse_gpu_order=False`` on Aurora, whose
GPU/CPU numbering does not follow the Polaris rule.

Caveat: ``--cpu-bind depth`` numbers cores from 0 in every mpiexec, so two tasks packed on one
node overlap; ALCF suggests ``--cpu-bind list:...`` for that case (same page).
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


class PalsLauncher(MpiLauncher):
    name = "pals"

    default_executable = "mpiexec"

    def __init__(self, executable: str | None = None, python: str | None = None,
                 reverse_gpu_order: bool = True):
        super().__init__(executable, python)
        self.reverse_gpu_order = reverse_gpu_order

    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        command = check_command(command)
        args = [self.executable, "-n", str(layout.num_ranks), "--ppn", str(layout.ranks_per_node),
                "--hosts", ",".join(layout.hosts), "--depth", str(layout.threads_per_rank),
                "--cpu-bind", "depth"]
        for key, value in check_env(env).items():
            args += ["--env", f"{key}={value}"]
        wrapper = gpu_affinity_prefix(layout, self.python, reverse=self.reverse_gpu_order)
        return [*args, *wrapper, *command]
