"""A launcher's configuration: everything it needs besides the store, checked on creation.

``LauncherConfig`` travels pickled from an executor to its child launcher, and is built by
``balsam-futures launcher`` from its options (cli/launcher.py, allocation.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .nodes import NodeSpec

#: serial: one-rank tasks run in warm workers on the launcher's own node (and agents' nodes);
#: mpi: every task is started with the MPI launcher on the nodes it was given.
JOB_MODES = ("serial", "mpi")
#: The launcher stops this long before the end of its wall time (at most this fraction of
#: it), to kill its runs and write their outcomes before the batch job is killed.
WALL_TIME_GRACE_S, WALL_TIME_GRACE_FRACTION = 30.0, 0.1


@dataclass
class LauncherConfig:
    """Everything a launcher needs besides the store."""

    num_workers: int
    launcher_id: int | None = None
    init_blob: bytes | None = None
    max_tasks_per_child: int | None = None
    #: Serve only tasks with these tags: a key's value, or a tuple of values (any of them).
    tags: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    idle_timeout: float | None = None
    worker_env: Mapping[str, str] = field(default_factory=dict)
    lease_seconds: float | None = None
    site: str | None = None  # where task working directories go (<site>/data)
    #: GPU ids this launcher hands out to its workers (None: detect this node's).  Used when
    #: ``nodes`` is not given: the launcher then has one node, this one, with one core per
    #: worker.
    gpu_ids: tuple[str, ...] | None = None
    #: The nodes of the allocation (see launcher/nodes); None: this machine, as above.
    nodes: Sequence[NodeSpec] | None = None
    #: True when ``nodes`` are all this machine (the local platform's virtual nodes).
    local_nodes: bool = True
    #: serial: one-rank tasks run in warm workers on this node; mpi: every task is started
    #: with the MPI launcher on the nodes it was given.
    job_mode: str = "serial"
    mpi_launcher: str | None = None  # mpich, openmpi, srun, aprun, pals, flux (None: detect)
    #: Stop after this many minutes (the batch job's wall time); tasks whose own wall time
    #: no longer fits are not claimed, and runs still going at the end end in RUN_TIMEOUT.
    wall_time_min: float | None = None
    batch_job_id: int | None = None
    #: Per-node agents with warm workers for one-rank runs on the nodes other than the
    #: head's (serial mode; agents/).  None: on for a batch system's nodes, off for the
    #: local platform's virtual nodes.
    agents: bool | None = None
    #: Simulated execution (simulate.py): runs start no process and last the
    #: ``data["sim_seconds"]`` their task carries; claims, placement and every store write
    #: are real.  For benchmarks and capacity planning; never on by default.
    simulate: bool = False
    #: True for the launcher an executor starts itself: its tasks print to the executor's
    #: terminal, as ProcessPoolExecutor's workers do.  Else a Python task's stdout and
    #: stderr go to ``job.out`` in its working directory, as a shell task's do.
    inherit_output: bool = False

    def __post_init__(self) -> None:
        if self.job_mode not in JOB_MODES:
            raise ValueError(f"job_mode must be one of {', '.join(JOB_MODES)}, "
                             f"not {self.job_mode!r}")
        if self.agents and self.job_mode != "serial":
            raise ValueError(f"agents need the serial job mode (they run one-rank tasks in "
                             f"warm workers), not {self.job_mode!r}; turn agents off or use "
                             "the serial job mode")
        if self.wall_time_min is not None and not self.wall_time_min > 0:
            raise ValueError(f"wall_time_min must be > 0, not {self.wall_time_min}")

    def task_context(self, db_url: str) -> dict[str, object]:
        """What the launcher sends with every task: its site, its store, and whether a
        Python task's output goes to ``job.out``."""
        return {"site": self.site, "db_url": db_url, "job_out": not self.inherit_output}

    def stop_after(self) -> float | None:
        """Seconds after the start at which the launcher stops its runs (None: never)."""
        if self.wall_time_min is None:
            return None
        wall = self.wall_time_min * 60
        return wall - min(WALL_TIME_GRACE_S, WALL_TIME_GRACE_FRACTION * wall)


def local_node(cores: int, gpu_ids: Sequence[str] | None = None) -> NodeSpec:
    """This machine as one node of ``cores`` cores and ``gpu_ids`` (None: its own GPUs,
    detected): the node of an executor's own launcher, and of a launcher given no ``nodes``."""
    if gpu_ids is None:
        from .nodes import discover_nodes

        gpu_ids = discover_nodes(name="local")[0].gpus
    return NodeSpec("localhost", cores, tuple(gpu_ids))
