"""Give this rank its own GPUs, then become the user's command.

    python -m balsam_futures.launcher.mpi.gpu_affinity --per-rank G --ids 3,2,1,0 -- cmd...
    python -m ... --per-rank G --ids host1=0,1 --ids host2=2,3 -- cmd...

The MPI launcher starts this once per rank. It reads the rank's index on its node from the
variable its launcher sets (``rank_variables.py``), takes
``ids[local_rank * G : (local_rank + 1) * G]``, exports that as each of ``launcher/gpus.py``'s
DEVICE_VARIABLES (CUDA_VISIBLE_DEVICES for NVIDIA, ZE_AFFINITY_MASK for Intel Level Zero,
ROCR_VISIBLE_DEVICES for AMD), and exec's the command, so the command keeps this process id
and gets its signals.
The Python form of ALCF's set_affinity_gpu_polaris.sh:
https://docs.alcf.anl.gov/polaris/running-jobs/using-gpus/#binding-mpi-ranks-to-gpus
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence

from ..gpus import rank_gpu_env
from .rank_variables import local_rank


def ids_for_host(id_specs: Sequence[str], hostname: str) -> list[str]:
    """The id list for this host: a single plain list applies everywhere."""
    if len(id_specs) == 1 and "=" not in id_specs[0]:
        return id_specs[0].split(",")
    short = hostname.split(".")[0]
    for spec in id_specs:
        host, _, ids = spec.partition("=")
        if host in (hostname, short) or host.split(".")[0] == short:
            return ids.split(",")
    raise RuntimeError(f"no --ids entry for host {hostname!r} in {list(id_specs)}")


def affinity_env(environ: Mapping[str, str], id_specs: Sequence[str], per_rank: int,
                 hostname: str) -> dict[str, str]:
    """The variables to set for this rank (pure, for tests)."""
    return rank_gpu_env(ids_for_host(id_specs, hostname), local_rank(environ), per_rank)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_affinity", description=__doc__.splitlines()[0])
    parser.add_argument("--ids", action="append", required=True,
                        help="comma-separated GPU ids, or HOST=ids once per host")
    parser.add_argument("--per-rank", type=int, default=1, help="GPUs per rank")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command is required after --")
    if args.per_rank < 1:
        parser.error("--per-rank must be >= 1")
    try:
        update = affinity_env(os.environ, args.ids, args.per_rank, socket.gethostname())
    except (RuntimeError, ValueError) as exc:
        print(f"gpu_affinity: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, **update}
    os.execvpe(command[0], command, env)
    return 127  # not reached: exec replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
