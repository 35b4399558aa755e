"""The site's policy for batch jobs: ``<site>/settings.json``.

JSON, because the standard library reads it on every supported Python (``tomllib`` needs
3.11).  Every key is optional; a missing file means: the local scheduler, any queue, no
limits, no service.  An unknown key is an error, so a typo does not silently drop a limit.

    {
      "scheduler": "slurm",                 default scheduler (local, slurm, pbs, ...)
      "project": "my-allocation",           default project / account
      "queues": {                           the allowed queues (absent: any queue)
        "debug": {"max_nodes": 2, "max_wall_time_min": 60, "max_queued_jobs": 1},
        "prod":  {"max_nodes": 512, "max_wall_time_min": 1440, "max_queued_jobs": 10}
      },
      "options": {                          defaults for every job's template options
        "pre_run": ["module load conda"], "platform": "slurm", "mpi_launcher": "srun"
      },
      "service": {                          the elastic queue service (balsam-futures service)
        "queue": "debug", "min_nodes": 1, "max_nodes": 2, "wall_time_min": 30,
        "max_queued_jobs": 1, "max_total_nodes": 4, "job_mode": "mpi",
        "filter_tags": {"campaign": "a"}, "cores_per_node": 32, "interval_s": 30
      }
    }

A queue's ``max_queued_jobs`` counts this site's jobs in that queue that the scheduler
holds, waiting or running (like Slurm's MaxSubmitJobs); the service's own
``max_queued_jobs`` counts only its jobs still waiting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import SCHEDULERS
from .base import BatchJobRequest, SitePolicyError

SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class QueueLimits:
    """Limits of one allowed queue; None means no limit."""

    max_nodes: int | None = None
    max_wall_time_min: int | None = None
    max_queued_jobs: int | None = None


@dataclass(frozen=True)
class ServiceSettings:
    """How the elastic queue service sizes and submits launcher jobs."""

    queue: str = ""
    project: str | None = None  # None: the site's default project
    scheduler: str | None = None  # None: the site's default scheduler
    min_nodes: int = 1
    max_nodes: int = 1
    wall_time_min: int = 60
    #: Jobs of this service waiting in the queue at once.
    max_queued_jobs: int = 1
    #: Nodes of this service's jobs, waiting and running together (None: no cap).
    max_total_nodes: int | None = None
    job_mode: str = "mpi"
    filter_tags: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Cores of one compute node, to turn the backlog of tasks without a node_packing_count
    #: (counted in cores) into nodes.  Set it to the machine's: too small asks for more nodes
    #: than the tasks fill; too large asks for too few, and the next ticks add more only
    #: once the running jobs are past their start (STARTUP_GRACE_S).
    cores_per_node: int = 64
    #: Seconds between ticks of ``balsam-futures service``.  Each tick runs one status
    #: command per scheduler; much shorter loads the controller (sites ask for 30 s or
    #: more), much longer leaves a backlog waiting before its jobs are submitted.
    interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_nodes <= self.max_nodes:
            raise SitePolicyError(f"service: need 1 <= min_nodes <= max_nodes, got "
                                  f"min_nodes={self.min_nodes}, max_nodes={self.max_nodes}")
        if self.max_queued_jobs < 1 or self.wall_time_min < 1 or self.interval_s <= 0:
            raise SitePolicyError("service: max_queued_jobs and wall_time_min must be at "
                                  "least 1, and interval_s above 0")


@dataclass(frozen=True)
class SitePolicy:
    scheduler: str = "local"
    project: str = ""
    #: Allowed queues and their limits; None allows any queue, without limits.
    queues: Mapping[str, QueueLimits] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    service: ServiceSettings | None = None
    source: str = "(defaults: no settings.json)"

    def check(self, request: BatchJobRequest, scheduler: str,
              active_in_queue: int) -> None:
        """Refuse ``request`` if the site does not allow it; ``active_in_queue`` is the number
        of this site's jobs the scheduler holds in that queue now."""
        if self.queues is None:
            return
        allowed = ", ".join(sorted(self.queues)) or "(none)"
        if request.queue not in self.queues:
            what = f"queue {request.queue!r}" if request.queue else "a job without a queue"
            raise SitePolicyError(f"{what} is not allowed at this site; allowed queues: "
                                  f"{allowed} (see {self.source})")
        limits = self.queues[request.queue]
        if limits.max_nodes is not None and request.num_nodes > limits.max_nodes:
            raise SitePolicyError(f"queue {request.queue!r} allows at most {limits.max_nodes} "
                                  f"nodes per job, not {request.num_nodes} (see {self.source})")
        if (limits.max_wall_time_min is not None
                and request.wall_time_min > limits.max_wall_time_min):
            raise SitePolicyError(f"queue {request.queue!r} allows at most "
                                  f"{limits.max_wall_time_min} minutes per job, not "
                                  f"{request.wall_time_min} (see {self.source})")
        if limits.max_queued_jobs is not None and active_in_queue >= limits.max_queued_jobs:
            raise SitePolicyError(f"queue {request.queue!r} allows {limits.max_queued_jobs} "
                                  f"job(s) of this site at once and has {active_in_queue}; "
                                  "wait for one to end or remove one (balsam-futures queue "
                                  f"rm) (see {self.source})")


def load_policy(site_path: Path) -> SitePolicy:
    """Read ``<site>/settings.json`` (defaults where it does not exist)."""
    path = Path(site_path) / SETTINGS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return SitePolicy()
    except OSError as exc:
        raise SitePolicyError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SitePolicyError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return _policy(raw, str(path))
    except (TypeError, ValueError) as exc:
        raise SitePolicyError(f"{path}: {exc}") from exc


def _policy(raw: Any, source: str) -> SitePolicy:
    top = _object(raw, "the settings", {"scheduler", "project", "queues", "options", "service"})
    scheduler = _typed(top, "scheduler", str, "local")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of "
                         f"{', '.join(SCHEDULERS)}")
    queues = None
    if "queues" in top:
        queues = {}
        for name, spec in _object(top["queues"], "queues", None).items():
            limits = _object(spec, f"queues.{name}", {f.name for f in fields(QueueLimits)})
            queues[name] = QueueLimits(**{k: _positive_int(limits, k, f"queues.{name}")
                                          for k in limits})
    options = dict(_object(top.get("options", {}), "options", None))
    service = None
    if "service" in top:
        known = {f.name for f in fields(ServiceSettings)}
        spec = dict(_object(top["service"], "service", known))
        for key in ("min_nodes", "max_nodes", "wall_time_min", "max_queued_jobs",
                    "max_total_nodes", "cores_per_node"):
            if key in spec and spec[key] is not None:
                spec[key] = _positive_int(spec, key, "service")
        if "filter_tags" in spec:
            spec["filter_tags"] = {str(k): str(v) for k, v in
                                   _object(spec["filter_tags"], "service.filter_tags",
                                           None).items()}
        service = ServiceSettings(**spec)
    return SitePolicy(scheduler=scheduler, project=_typed(top, "project", str, ""),
                      queues=queues, options=options, service=service, source=source)


def _object(value: Any, where: str, known: set[str] | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a JSON object, not {type(value).__name__}")
    if known is not None:
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
    return value


def _typed(obj: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key, default)
    if not isinstance(value, kind):
        raise TypeError(f"{key} must be a {kind.__name__}, not {value!r}")
    return value


def _positive_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}.{key} must be a whole number of at least 1, not {value!r}")
    return value


def merged_options(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options from the site down to the job: later layers win, key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer or {})
    return out


__all__: Sequence[str] = ["SETTINGS_FILE", "QueueLimits", "ServiceSettings", "SitePolicy",
                          "load_policy", "merged_options"]
