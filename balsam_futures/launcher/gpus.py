"""GPU visibility: every variable that says which GPUs a process sees, and who sets which.

    node discovery (nodes/)    visible_gpu_ids(environ)      the launcher's GPUs, read from
                                                             VISIBLE_DEVICE_VARIABLES
    warm workers (workers/)    split_gpus, worker_gpu_env    one GPU per worker at start; a
                                                             worker's variables at its start
    MPI ranks (mpi/)           rank_gpu_env                  a rank's slice of its task's
                                                             ids (the gpu_affinity wrapper)

A process cannot change the GPUs it sees once the runtime has read these variables (CUDA and
friends read them once, at first use), which is why workers are started, or restarted, pinned
to their GPUs, and why each MPI rank goes through a wrapper that sets them before the command.

Everything here is pure: ``environ`` mappings in, dictionaries out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Read, first set wins, for the GPUs this node (this process) was given: NVIDIA, AMD ROCr,
#: AMD HIP, Intel Level Zero.  The launcher's own node stands for the whole allocation
#: (allocations are taken to be homogeneous).
VISIBLE_DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                            "HIP_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")
#: Set, all to the same ids, to pin a process to its GPUs (NVIDIA, Intel Level Zero, AMD).
#: HIP_VISIBLE_DEVICES is read but never set: HIP numbers the devices that ROCr already
#: exposes, so the same ids in both would select from the selection (ROCR=2 and HIP=2 leave
#: no GPU at all).
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "ROCR_VISIBLE_DEVICES")
#: Set for a warm worker only when its launcher's environment has it (the node uses ROCm);
#: an MPI rank's wrapper sets it always.
_ROCR = "ROCR_VISIBLE_DEVICES"

# Values that mean "no GPUs" in a *_VISIBLE_DEVICES variable: old Slurm sets
# CUDA_VISIBLE_DEVICES=NoDevFiles in jobs without GPUs, and an empty value hides every GPU.
_NO_DEVICES = frozenset({"", "NoDevFiles"})


def visible_gpu_ids(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """GPU ids from the first ``*_VISIBLE_DEVICES``/``ZE_AFFINITY_MASK`` set, else None."""
    for variable in VISIBLE_DEVICE_VARIABLES:
        if variable not in environ:
            continue
        value = environ[variable].strip()
        if value in _NO_DEVICES:
            return ()
        ids = tuple(part.strip() for part in value.split(","))
        if not all(ids):
            raise ValueError(f"{variable}={value!r} has an empty GPU id")
        return ids
    return None


def split_gpus(gpu_ids: Sequence[str], num_workers: int) -> list[tuple[str, ...]]:
    """The GPUs each of ``num_workers`` workers starts pinned to: one GPU each while they
    last (the common one-model-per-GPU case needs no restart); the rest get none."""
    ids = list(gpu_ids)
    return [(ids[i],) if i < len(ids) else () for i in range(num_workers)]


def worker_gpu_env(gpus: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that make a warm worker see only ``gpus`` (none: an empty list hides
    them all), so that a task run there uses those: one model per GPU.  ``environ`` is the
    environment the worker starts from (ROCR_VISIBLE_DEVICES only where it already has it).
    """
    ids = ",".join(gpus)
    return {name: ids for name in DEVICE_VARIABLES if name != _ROCR or name in environ}


def rank_devices(ids: Sequence[str], rank: int, per_rank: int) -> list[str]:
    """Local rank ``rank``'s slice of ``ids``: ``per_rank`` GPUs each, in order."""
    chosen = list(ids[rank * per_rank:(rank + 1) * per_rank])
    if len(chosen) < per_rank:
        raise RuntimeError(f"local rank {rank} needs GPUs {rank * per_rank}.."
                           f"{(rank + 1) * per_rank - 1} of {list(ids)}, which has {len(ids)}")
    return chosen


def rank_gpu_env(ids: Sequence[str], rank: int, per_rank: int) -> dict[str, str]:
    """The variables that give local rank ``rank`` its own ``per_rank`` GPUs of ``ids``."""
    return dict.fromkeys(DEVICE_VARIABLES, ",".join(rank_devices(ids, rank, per_rank)))
