"""What one task is: its states, the allowed transitions, its resources and options.

The state names follow Balsam where the meaning is the same.  ``TRANSITIONS`` is the one table
of allowed moves; the store derives every ``WHERE state IN (...)`` guard from it, and no other
module compares state strings.

    CREATED ──> READY ──claim──> CLAIMED ──start──> RUNNING ──> RUN_DONE ──> [POSTPROCESSED]
       │          ▲                 │                 │                         ──> JOB_FINISHED
       │          └──launcher lost──┘                 ├──> RUN_ERROR ───> RESTART_READY | FAILED
       └─> AWAITING_PARENTS                           ├──> RUN_TIMEOUT ─> RESTART_READY | FAILED
                                                      ├──> KILLED
                                                      └──> RESTART_READY (launcher lost)
    READY / RESTART_READY / CLAIMED / AWAITING_PARENTS / CREATED ──cancel──> CANCELLED

Data staging (``stage_in=`` / ``stage_out=``) adds the moves of a launcher's transfer thread:

    AWAITING_STAGE_IN ──claim──> STAGING_IN ──> STAGED_IN ──> READY ──> ... ──> RUN_DONE
                                    ├──> FAILED (the transfer failed, retries spent)
                                    └──> AWAITING_STAGE_IN (its launcher stopped or was lost)
    RUN_DONE ──> STAGING_OUT ──> STAGED_OUT ──> JOB_FINISHED
                    ├──> FAILED (the transfer failed, retries spent)
                    └──> RESTART_READY (its launcher was lost: the run is done again)

A cache hit (``cache=True``) is stored finished: CREATED ──> JOB_FINISHED with the result of
the task it reuses; a task that follows an identical one in flight waits for it in
AWAITING_PARENTS and takes its result (AWAITING_PARENTS ──> JOB_FINISHED), or runs on its
own if that one does not succeed.

CLAIMED is not RUNNING: a claimed task sits in its launcher's short backlog under that
launcher's lease and can still be cancelled; RUNNING means a run has started.  A launcher
writes its CLAIMED→RUNNING moves in the same transaction as its next outcomes and claims, so
the split costs no round trip.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import validation


class TaskState(str, enum.Enum):
    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    AWAITING_STAGE_IN = "AWAITING_STAGE_IN"
    STAGING_IN = "STAGING_IN"
    STAGED_IN = "STAGED_IN"
    READY = "READY"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    STAGING_OUT = "STAGING_OUT"
    STAGED_OUT = "STAGED_OUT"
    POSTPROCESSED = "POSTPROCESSED"
    JOB_FINISHED = "JOB_FINISHED"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    FAILED = "FAILED"
    KILLED = "KILLED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


S = TaskState

STATE_DESCRIPTIONS: dict[TaskState, str] = {
    S.CREATED: "stored, not yet examined",
    S.AWAITING_PARENTS: "waits for the tasks it depends on (or for an identical task)",
    S.AWAITING_STAGE_IN: "waits for a launcher to fetch its inputs (stage_in)",
    S.STAGING_IN: "a launcher fetches its inputs",
    S.STAGED_IN: "its inputs are in its working directory",
    S.READY: "may be claimed by a launcher",
    S.CLAIMED: "held by a launcher, not started yet (can still be cancelled)",
    S.RUNNING: "running under a launcher",
    S.RUN_DONE: "the run ended successfully",
    S.STAGING_OUT: "its launcher ships its outputs (stage_out)",
    S.STAGED_OUT: "its outputs were shipped",
    S.POSTPROCESSED: "the post-processing hook ran",
    S.JOB_FINISHED: "finished; the result is stored",
    S.RUN_ERROR: "the run raised or exited non-zero",
    S.RUN_TIMEOUT: "the run exceeded its wall time or its launcher's",
    S.RESTART_READY: "will run again (retry, time-out or lost launcher)",
    S.FAILED: "failed for good; the error is stored",
    S.KILLED: "killed at run time on request",
    S.CANCELLED: "cancelled before any launcher ran it",
}

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # To JOB_FINISHED: a cache hit, stored with the result it reuses.
    S.CREATED: frozenset({S.READY, S.AWAITING_PARENTS, S.AWAITING_STAGE_IN, S.JOB_FINISHED,
                          S.CANCELLED}),
    # To JOB_FINISHED: it followed an identical task in flight, which succeeded.
    S.AWAITING_PARENTS: frozenset({S.READY, S.AWAITING_STAGE_IN, S.JOB_FINISHED, S.FAILED,
                                   S.CANCELLED}),
    S.AWAITING_STAGE_IN: frozenset({S.STAGING_IN, S.CANCELLED}),
    # Back to AWAITING_STAGE_IN: its launcher stopped or was lost during the transfer.
    S.STAGING_IN: frozenset({S.STAGED_IN, S.FAILED, S.AWAITING_STAGE_IN, S.CANCELLED}),
    S.STAGED_IN: frozenset({S.READY}),
    S.READY: frozenset({S.CLAIMED, S.CANCELLED}),
    S.RESTART_READY: frozenset({S.CLAIMED, S.CANCELLED}),
    # Back to READY: its launcher stopped or was lost before starting it (not a restart).
    S.CLAIMED: frozenset({S.RUNNING, S.READY, S.RESTART_READY, S.CANCELLED}),
    S.RUNNING: frozenset({S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.KILLED, S.RESTART_READY}),
    S.RUN_DONE: frozenset({S.POSTPROCESSED, S.JOB_FINISHED, S.RUN_ERROR, S.STAGING_OUT}),
    # To RESTART_READY: its launcher was lost while shipping; the outputs may be gone too.
    S.STAGING_OUT: frozenset({S.STAGED_OUT, S.FAILED, S.RESTART_READY}),
    S.STAGED_OUT: frozenset({S.JOB_FINISHED}),
    S.POSTPROCESSED: frozenset({S.JOB_FINISHED}),
    S.RUN_ERROR: frozenset({S.RESTART_READY, S.FAILED}),
    S.RUN_TIMEOUT: frozenset({S.RESTART_READY, S.FAILED}),
    # To AWAITING_STAGE_IN: a retry of a task with inputs fetches them again (what is
    # present already is kept).
    S.FAILED: frozenset({S.RESTART_READY, S.AWAITING_STAGE_IN}),
    S.KILLED: frozenset({S.RESTART_READY}),
    S.JOB_FINISHED: frozenset(),
    S.CANCELLED: frozenset(),
}

#: States a launcher may claim.
CLAIMABLE: frozenset[TaskState] = frozenset({S.READY, S.RESTART_READY})
#: States of a task held under a launcher's lease: requeued if that launcher is not alive.
HELD: frozenset[TaskState] = frozenset({S.CLAIMED, S.RUNNING, S.STAGING_IN, S.STAGING_OUT})
#: States that resolve a future: nothing further happens without a manual retry.
FINAL: frozenset[TaskState] = frozenset({S.JOB_FINISHED, S.FAILED, S.KILLED, S.CANCELLED})
#: States the watcher reads events for.
WATCHED: frozenset[TaskState] = FINAL | {S.RUNNING}


class LauncherState(str, enum.Enum):
    """A launcher's recorded life: RUNNING while it heartbeats within its own lease; STOPPED
    when it stopped and gave its tasks back; EXPIRED when its lease ran out and its tasks
    were requeued by someone else (a fenced launcher, should it wake up, stops)."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    EXPIRED = "EXPIRED"

    def __str__(self) -> str:
        return self.value


def sources(target: TaskState) -> frozenset[TaskState]:
    """Every state from which ``target`` may be reached in one move."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check_transition(old: TaskState, new: TaskState) -> None:
    if new not in TRANSITIONS[old]:
        raise ValueError(f"a task cannot move from {old} to {new}")


def parse_state(name: str | TaskState) -> TaskState:
    """Turn a state name into a TaskState, with an error that lists the valid names."""
    try:
        return TaskState(str(name).upper())
    except ValueError:
        valid = ", ".join(s.value for s in TaskState)
        raise ValueError(f"unknown task state {name!r}; valid states: {valid}") from None


def _check_int(name: str, value: Any, minimum: int) -> int:
    # Every int option lands in an Integer column: 32-bit on PostgreSQL, so capped there.
    return validation.check_int(name, value, minimum)


@dataclass(frozen=True)
class Resources:
    """What one task occupies while it runs.

    A task takes ``num_nodes`` nodes and, on each, ``ranks_per_node * threads_per_rank`` cores
    and ``ranks_per_node * gpus_per_rank`` GPUs.  ``node_packing_count`` is how many such tasks
    may share one node (Balsam's field of the same name); 0, the default, sets no such limit:
    tasks share a node as long as its cores and GPUs go round (one task per worker, as with
    ProcessPoolExecutor).  A task of several nodes takes its nodes whole.
    """

    num_nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    node_packing_count: int = 0

    def __post_init__(self) -> None:
        _check_int("num_nodes", self.num_nodes, 1)
        _check_int("ranks_per_node", self.ranks_per_node, 1)
        _check_int("threads_per_rank", self.threads_per_rank, 1)
        _check_int("gpus_per_rank", self.gpus_per_rank, 0)
        _check_int("node_packing_count", self.node_packing_count, 0)

    @property
    def cores_per_node(self) -> int:
        return self.ranks_per_node * self.threads_per_rank

    @property
    def gpus_per_node(self) -> int:
        return self.ranks_per_node * self.gpus_per_rank

    @property
    def total_ranks(self) -> int:
        return self.num_nodes * self.ranks_per_node


@dataclass(frozen=True)
class TaskOptions:
    """Per-task options, given with ``executor.options(...)``.

    They are kept apart from the callable's own keyword arguments, so that a function with a
    ``name=`` or ``tags=`` parameter can still be submitted unchanged.
    """

    name: str | None = None
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 0
    timeout: float | None = None
    auto_timeout_retry: bool = True
    priority: int = 0
    #: Working directory: absolute, or relative to the site's data/ directory; created when
    #: the task runs.  A Python task runs with it as its current directory; a shell task
    #: uses it unless its ShellApp names one.  Default: none for Python tasks (they run in
    #: the launcher's directory, as with ProcessPoolExecutor), data/<workflow>/<name>_<id>
    #: for shell tasks.
    workdir: str | None = None
    #: Tasks (futures or ids) that must finish before this one runs.
    depends_on: Sequence[Any] = ()
    #: Run even if a task in ``depends_on`` fails (else this one fails with DependencyError).
    allow_parent_failure: bool = False
    #: The kind its run time is learned and estimated under (default: the task's name); see
    #: docs/mpi-gpus.md, "Claim order".
    kind: str | None = None
    #: Memoization: True reuses the stored result of an identical call that succeeded (or
    #: follows one in flight) instead of running; "refresh" runs it again and makes the new
    #: result the one reused; False (default) always runs.  See docs/workflows.md, "Caching".
    cache: bool | str = False
    #: Part of the cache key: change it to invalidate the results stored so far.
    cache_version: str | int | None = None
    #: Files fetched into the working directory before the task runs: (url, dest) pairs;
    #: and files shipped after a successful run: (glob pattern, url) pairs.  URLs: local
    #: paths, file://, http(s):// (stage_in only), rsync://, host:path, globus://.
    stage_in: Sequence[Any] = ()
    stage_out: Sequence[Any] = ()

    def __post_init__(self) -> None:
        # Everything the task store would refuse is refused here, before the writer thread
        # stores it with other tasks in one transaction (see validation.py).
        if self.name is not None:
            validation.check_name(self.name)
        if self.kind is not None:
            validation.check_name(self.kind, "kind")
        validation.check_text("description", self.description)
        validation.check_tags(self.tags)
        validation.check_data(self.data)
        if not isinstance(self.resources, Resources):
            raise TypeError("resources must be a balsam_futures.Resources")
        _check_int("max_retries", self.max_retries, 0)
        _check_int("priority", self.priority, validation.INT32_MIN)
        validation.check_bool("auto_timeout_retry", self.auto_timeout_retry)
        validation.check_bool("allow_parent_failure", self.allow_parent_failure)
        validation.check_workdir(self.workdir)
        object.__setattr__(self, "depends_on", validation.check_depends_on(self.depends_on))
        # As a float: the wall_time_s column is one, and SQLite cannot bind an int past 2**63.
        object.__setattr__(self, "timeout", validation.check_timeout(self.timeout))
        if not (isinstance(self.cache, bool) or self.cache == "refresh"):
            raise ValueError(f"cache must be True, False or 'refresh', not {self.cache!r}")
        if self.cache_version is not None and (
                not isinstance(self.cache_version, (str, int))
                or isinstance(self.cache_version, bool)):
            raise TypeError("cache_version must be a str or an int, not "
                            f"{type(self.cache_version).__name__}")
        if isinstance(self.cache_version, str):
            validation.check_text("cache_version", self.cache_version)
        if self.stage_in or self.stage_out:
            from .staging import parse_stage_in, parse_stage_out  # only when staging is used

            object.__setattr__(self, "stage_in", parse_stage_in(self.stage_in))
            object.__setattr__(self, "stage_out", parse_stage_out(self.stage_out))
        else:
            object.__setattr__(self, "stage_in", ())
            object.__setattr__(self, "stage_out", ())

    def merged(self, **changes: Any) -> TaskOptions:
        """A copy with ``changes`` applied; ``tags`` and ``data`` are merged key by key."""
        fields = {**self.__dict__}
        for key, value in changes.items():
            if key not in fields:
                valid = ", ".join(sorted(fields))
                raise TypeError(f"unknown task option {key!r}; valid options: {valid}")
            if key in ("tags", "data") and isinstance(value, Mapping):
                value = {**fields[key], **value}
            fields[key] = value
        return TaskOptions(**fields)


@dataclass(frozen=True)
class TaskSpec:
    """One task as ``submit`` builds it, ready to be stored (the first stage of its trip)."""

    kind: str  # "python" or "shell"
    payload: bytes
    options: TaskOptions
    name: str
    state: TaskState = TaskState.READY
    parent_id: int | None = None
    depends_on: Sequence[int] = ()
    #: The call's cache key (cache_key.py) when submitted with ``cache=``.
    cache_key: str | None = None


def outcome_path(
    run_state: TaskState, num_restarts: int, max_retries: int, auto_timeout_retry: bool,
    stage_out: bool = False,
) -> tuple[TaskState, ...]:
    """The states a task moves through after RUNNING ends in ``run_state``.

    A successful run of a task with ``stage_out`` files stops at STAGING_OUT, held by its
    launcher until its transfer thread has shipped them.

    An error is retried while ``num_restarts < max_retries``.  A time-out is retried with
    ``auto_timeout_retry`` (Balsam's default) up to ``max(1, max_retries)`` times.
    """
    if run_state is S.RUN_DONE:
        return (S.RUN_DONE, S.STAGING_OUT if stage_out else S.JOB_FINISHED)
    if run_state is S.KILLED:
        return (S.KILLED,)
    if run_state is S.RUN_ERROR:
        retry = num_restarts < max_retries
    elif run_state is S.RUN_TIMEOUT:
        retry = auto_timeout_retry and num_restarts < max(1, max_retries)
    else:
        raise ValueError(f"{run_state} is not how a run ends")
    return (run_state, S.RESTART_READY if retry else S.FAILED)


@dataclass(frozen=True)
class TaskContext:
    """What a running task knows about itself; see :func:`current_task`."""

    id: int
    name: str
    tags: Mapping[str, str]
    data: Mapping[str, Any] = field(default_factory=dict)
    launcher_id: int | None = None
    workdir: str | None = None
    #: The site directory of the launcher running the task (working directories go under
    #: its data/), and the store's URL: an executor created inside the task uses both.
    site: str | None = None
    db_url: str | None = None
    #: Pickled results of the tasks this one depends on, by task id.
    parent_results: Mapping[int, bytes | None] = field(default_factory=dict)
    #: Where the launcher placed the run: host names (as the MPI launcher knows them) and the
    #: GPU ids given on each, with the task's resources.
    hosts: tuple[str, ...] = ()
    gpu_ids: tuple[tuple[str, ...], ...] = ()
    resources: Resources = field(default_factory=lambda: Resources())
    #: The MPI launcher of this launcher (mpich, openmpi, srun, aprun, pals, flux), and
    #: whether this run is started through it (several ranks, or the launcher's mpi mode).
    mpi_launcher: str | None = None
    mpi: bool = False


_current: TaskContext | None = None


def _set_current(context: TaskContext | None) -> None:
    global _current
    _current = context


def resolve_workdir(workdir: str, site: str | None) -> str:
    """A task's working directory as a path: relative ones live under <site>/data."""
    if workdir.startswith("/") or site is None:
        return workdir
    return f"{site.rstrip('/')}/data/{workdir}"


def current_task() -> TaskContext | None:
    """The task running in this process, or None outside a task."""
    return _current
