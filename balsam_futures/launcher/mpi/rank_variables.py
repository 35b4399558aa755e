"""The variables MPI launchers set for each rank, in one place.

    rank.py          world_rank(environ)             a rank's number before MPI is up
    gpu_affinity.py  local_rank(environ)             its index on its node
    run.py           LOCAL_RANK_VARIABLES            dropped from a task's environment
    agents/node.py   without_rank_variables(environ) an agent's workers are no ranks

Hydra (MPICH), PMIx, Open MPI, PALS, Slurm steps, flux and ALPS each name them their own
way.  Pure: ``environ`` mappings in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Where each launcher puts the rank's number in the whole job, first match wins: hydra,
#: Open MPI, PALS, srun, flux, ALPS.
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PALS_RANKID", "SLURM_PROCID",
                  "FLUX_TASK_RANK", "ALPS_APP_PE")
# Where each launcher puts the node-local rank, first match wins. PMI_LOCAL_RANK: PALS and Cray
# MPICH (what the ALCF script reads); PALS_LOCAL_RANKID: PALS; OMPI_COMM_WORLD_LOCAL_RANK: Open
# MPI; MPI_LOCALRANKID: MPICH hydra; SLURM_LOCALID / FLUX_TASK_LOCAL_ID: srun / flux.
LOCAL_RANK_VARIABLES = ("PMI_LOCAL_RANK", "PALS_LOCAL_RANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "MPI_LOCALRANKID", "SLURM_LOCALID", "FLUX_TASK_LOCAL_ID")
#: Prefixes of the variables a launcher sets for each rank (hydra's PMI, PMIx, Open MPI,
#: PALS, flux, hydra itself): every variable under them belongs to the rank.
RANK_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "PALS_", "FLUX_TASK_", "HYDRA_")
#: The per-rank variables by name (those prefixes cover the rest): the two lists above,
#: MPICH's count of local ranks, and what a Slurm step sets for each of its tasks.
PER_RANK_VARIABLES = frozenset({*RANK_VARIABLES, *LOCAL_RANK_VARIABLES, "MPI_LOCALNRANKS",
                                "SLURM_GTIDS", "SLURM_TASK_PID", "SLURM_STEPID",
                                "SLURM_STEP_ID"})


def world_rank(environ: Mapping[str, str]) -> int:
    """This rank's number from its launcher's variables (0 when none is set)."""
    for name in RANK_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 0


def local_rank(environ: Mapping[str, str]) -> int:
    """This rank's index on its node; RuntimeError when no launcher set one."""
    for name in LOCAL_RANK_VARIABLES:
        value = environ.get(name)
        if value not in (None, ""):
            return int(value)
    raise RuntimeError("no node-local rank variable is set (looked for "
                       f"{', '.join(LOCAL_RANK_VARIABLES)}); run this under an MPI launcher")


def is_rank_variable(name: str) -> bool:
    """Whether an MPI launcher sets variable ``name`` for each rank."""
    return name in PER_RANK_VARIABLES or name.startswith(RANK_PREFIXES)


def without_rank_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less every per-rank variable: for processes that must not join the MPI
    job of the process that starts them."""
    return {k: v for k, v in environ.items() if not is_rank_variable(k)}
