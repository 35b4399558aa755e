"""What a task store is asked, by whom, and the records that cross it.

    executor  ──create_tasks──────────> TaskSpec rows                   (ExecutorStore)
    launcher  ──exchange(started, TaskOutcome, ClaimOffer)──> Exchange(ClaimedTask...)
              ──heartbeat / requeue_expired / stop_launcher──>           (LauncherStore)
    watcher   ──read_events(after)────> TaskEvent                        (WatcherStore)
    CLI, user ──query_* / history / list_*──> plain dicts               (QueryStore)

``Store`` is all four.  ``SqlStore`` (base.py) implements it over SQLAlchemy Core for SQLite
and PostgreSQL; code above ``backends/`` names these protocols, never ``SqlStore``, so a new
store (or a stand-in in a test) only has to provide the methods of the roles it serves.
Every time a store writes comes from its ``clock``, so leases are tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..tasks import TaskSpec, TaskState


@dataclass(frozen=True)
class ClaimedTask:
    """A task held by a launcher (the second stage of its trip)."""

    id: int
    name: str
    kind: str
    payload: bytes
    tags: dict[str, str]
    data: dict[str, Any]
    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    node_packing_count: int
    wall_time_s: float | None
    max_retries: int
    num_restarts: int
    auto_timeout_retry: bool
    workdir: str | None
    num_parents: int = 0
    #: Results (pickled) of the tasks this one depends on, by task id.
    parent_results: dict[int, bytes | None] = field(default_factory=dict)
    #: Its stage_in/stage_out lists ({"in": [...], "out": [...]}), or None.
    staging: dict[str, Any] | None = None

    @property
    def stages_out(self) -> bool:
        """Whether a successful run ends in STAGING_OUT (it has outputs to ship)."""
        return bool(self.staging and self.staging.get("out"))


@dataclass(frozen=True)
class TaskOutcome:
    """What a launcher writes back for one run (the third stage).

    ``path`` is the states after RUNNING, e.g. ``(RUN_DONE, JOB_FINISHED)`` or
    ``(RUN_ERROR, RESTART_READY)``; see :func:`balsam_futures.tasks.outcome_path`.
    """

    task_id: int
    path: tuple[TaskState, ...]
    result: bytes | None = None
    error: bytes | None = None
    return_code: int | None = None
    message: str = ""
    #: Where and when it ran, for the execution profile (``bf_runs``): hosts, gpus, cores,
    #: share (see ``launcher.packing.Placement.as_record``), started_at, ended_at (epoch s).
    run: dict[str, Any] | None = None


@dataclass(frozen=True)
class ClaimOffer:
    """What a launcher can take in one claim.

    The filters run in SQL: at most ``max_nodes`` nodes and ``max_gpus`` GPUs per node, the
    given ``tags``, an expected run time (estimate, else timeout) of at most ``max_wall_s``
    (tasks whose run time is unknown always pass).
    ``fit``, if given, is called inside the claim transaction with up to ``window`` candidate
    rows in claim order (each with the task's resource fields) and returns the indexes of
    those the launcher takes; the rest stay claimable for others.
    """

    max_nodes: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    max_gpus: int | None = None
    max_wall_s: float | None = None
    fit: Callable[[list[FitRow]], list[int]] | None = None
    window: int | None = None
    #: Claim in submission order within a priority (set by the store's starvation guard),
    #: not longest expected first.
    by_submission: bool = False

    def statement_key(self) -> tuple:
        return (self.max_nodes, tuple(sorted(self.tags.items())), self.max_gpus,
                self.max_wall_s is not None, self.by_submission)


@dataclass(frozen=True)
class TaskEvent:
    """A watched state change as a watcher reads it (the last stage)."""

    event_id: int
    task_id: int
    state: TaskState
    result: bytes | None
    error: bytes | None


@dataclass
class LauncherInfo:
    """A launcher as it registers: where it runs, and what it has (``info``: its nodes,
    workers, mode...; ``balsam-futures launchers`` and the execution profile show it)."""

    hostname: str
    pid: int
    info: dict[str, Any] = field(default_factory=dict)
    batch_job_id: int | None = None
    #: Its lease in seconds (None: BALSAM_FUTURES_LEASE_SECONDS), stored with it: it is
    #: presumed dead, and its tasks requeued, once silent for this long.
    lease_s: float | None = None

    @classmethod
    def describe(cls, nodes: Sequence[Any], *, batch_job_id: int | None = None,
                 lease_s: float | None = None, **details: Any) -> LauncherInfo:
        """The record of a launcher run by this process on ``nodes`` (each with ``hostname``,
        ``cores`` and ``gpus``, as ``launcher.nodes.NodeSpec``): ``info`` holds ``details``
        (workers, job_mode...) in the order given, then the nodes."""
        import os
        import socket

        info = {**details, "nodes": [{"hostname": n.hostname, "cores": n.cores,
                                      "gpus": list(n.gpus)} for n in nodes]}
        return cls(socket.gethostname(), os.getpid(), info, batch_job_id=batch_job_id,
                   lease_s=lease_s)


@dataclass(frozen=True)
class Exchange:
    """What one launcher round trip brought back: the tasks it claimed, and the tasks it said
    it started that it no longer holds (cancelled or requeued meanwhile: stop those runs)."""

    claimed: list[ClaimedTask]
    lost: list[int]
    #: Whether this round trip made tasks claimable (retries, released children, requeues):
    #: its own writes, which the launcher's change probe does not report to it.
    released: bool = False


# -- what each role may ask ---------------------------------------------------------------


class ChangeProbe(Protocol):
    """How pollers learn cheaply that something may have changed."""

    display_url: str
    clock: Callable[[], float]

    def changed(self) -> bool: ...
    def notify_fd(self) -> int | None: ...
    def close(self) -> None: ...


class LauncherStore(ChangeProbe, Protocol):
    """What a launcher asks: its registration, its round trips, its lease, its kills."""

    def register_launcher(self, info: LauncherInfo) -> int: ...
    def exchange(self, launcher_id: int, started: Sequence[int],
                 outcomes: Sequence[TaskOutcome], limit: int,
                 offer: ClaimOffer | None = None, *, asked: float | None = None
                 ) -> Exchange: ...
    def heartbeat(self, launcher_id: int, *, asked: float | None = None) -> None: ...
    def kill_requests(self, launcher_id: int) -> list[int]: ...
    def too_long_tasks(self, max_wall_s: float, tags: dict[str, str] | None = None,
                       limit: int = ...) -> list[tuple[str, int, float]]: ...
    def unfit_tasks(self, max_nodes: int, max_gpus: int, tags: dict[str, str] | None = None,
                    limit: int = 10) -> list[tuple[int, int, int]]: ...
    def requeue_expired(self, sweeper_id: int | None = None, *,
                        unreachable_until: float = 0.0) -> list[int]: ...
    def stop_launcher(self, launcher_id: int, message: str = ...) -> list[int]: ...


class ExecutorStore(ChangeProbe, Protocol):
    """What an executor asks: storing tasks, cancelling and killing them, re-attaching."""

    def create_tasks(self, specs: Sequence[TaskSpec]) -> list[int]: ...
    def cancel(self, task_ids: Sequence[int]) -> list[int]: ...
    def kill(self, task_ids: Sequence[int]) -> list[int]: ...
    def task_outcomes(self, task_ids: Sequence[int]) -> list[TaskEvent]: ...
    def task_ids(self, tags: dict[str, str]) -> list[int]: ...
    def register_launcher(self, info: LauncherInfo) -> int: ...
    def stop_launcher(self, launcher_id: int, message: str = ...) -> list[int]: ...


class WatcherStore(ChangeProbe, Protocol):
    """What a watcher asks: events after its cursor, deletions, and the lease sweep."""

    def latest_event_id(self) -> int: ...
    def read_events(self, after: int, limit: int = ...) -> tuple[list[TaskEvent], int]: ...
    def deletions(self) -> int: ...
    def task_outcomes(self, task_ids: Sequence[int]) -> list[TaskEvent]: ...
    def requeue_expired(self, sweeper_id: int | None = None, *,
                        unreachable_until: float = 0.0) -> list[int]: ...
    def stop_launcher(self, launcher_id: int, message: str = ...) -> list[int]: ...


class QueryStore(ChangeProbe, Protocol):
    """What the query API and the command line ask (balsam_futures.query, cli/)."""

    def query(self, filters: tuple, order: tuple[str, ...] = (), limit: int | None = None
              ) -> list[dict[str, Any]]: ...
    def query_count_by_state(self, filters: tuple) -> dict[str, int]: ...
    def query_update(self, filters: tuple, values: dict[str, Any], message: str
                     ) -> list[int]: ...
    def query_delete(self, filters: tuple, *, running: bool = False) -> list[int]: ...
    def get_tasks(self, task_ids: Sequence[int]) -> list[dict[str, Any]]: ...
    def history(self, task_id: int) -> list[dict[str, Any]]: ...
    def histories(self, task_ids: list[int]) -> dict[int, list[dict[str, Any]]]: ...
    def task_payload(self, task_id: int) -> tuple[str, bytes] | None: ...
    def failed_page(self, filters: tuple, after: int, limit: int
                    ) -> list[dict[str, Any]]: ...
    def slowest_names(self, since: float, limit: int = 10) -> list[dict[str, Any]]: ...
    def count_by_state(self) -> dict[str, int]: ...
    def list_launchers(self) -> list[dict[str, Any]]: ...
    def list_runs(self, start: float = 0.0, end: float = ...) -> list[dict[str, Any]]: ...
    def kind_estimates(self) -> list[dict[str, Any]]: ...
    def cancel(self, task_ids: Sequence[int]) -> list[int]: ...
    def kill(self, task_ids: Sequence[int]) -> list[int]: ...
    def task_outcomes(self, task_ids: Sequence[int]) -> list[TaskEvent]: ...


class Store(LauncherStore, ExecutorStore, WatcherStore, QueryStore, Protocol):
    """Everything a task store answers (batch jobs aside: see backends/batchjobs.py)."""


class FitRow(Protocol):
    """A claim candidate as ``ClaimOffer.fit`` sees it: the task's id and resource fields."""

    id: int
    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    node_packing_count: int
    wall_time_s: float | None


__all__ = ["ChangeProbe", "ClaimOffer", "ClaimedTask", "Exchange", "ExecutorStore", "FitRow",
           "LauncherInfo", "LauncherStore", "QueryStore", "Store", "TaskEvent", "TaskOutcome",
           "WatcherStore"]
