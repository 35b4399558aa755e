"""Why a task is not running, in words (``balsam-futures explain ID``, ``TaskQuery.explain``).

Modelled on HyperQueue's ``hq task explain``: one read of the task, its parents, the live
launchers and its place in the claim order (``store.explain_facts``), then the first reason
that holds, in the order a launcher would meet them:

    final / running / claimed    nothing to wait for, or about to start
    AWAITING_PARENTS             which parents, in which state
    claimable                    no live launcher; none serves its tags; too many nodes or
                                 GPUs for the largest; its expected run time fits no live
                                 launcher's remaining wall time; N tasks ahead of it
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import setting
from .tasks import CLAIMABLE, FINAL, TaskState


@dataclass(frozen=True)
class Explanation:
    """Why task ``task_id`` (in ``state``) is not running: ``reasons``, one sentence each."""

    task_id: int
    state: str
    reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join([f"task {self.task_id} is {self.state}"] + [
            f"  - {r}" for r in self.reasons])


def explain(store: Any, task_id: int) -> Explanation:
    """Explain task ``task_id``; raises ``LookupError`` if there is no such task."""
    facts = store.explain_facts(task_id)
    if facts is None:
        raise LookupError(f"no task {task_id}")
    return Explanation(task_id, facts["task"]["state"], reasons(facts))


def reasons(facts: Mapping[str, Any]) -> list[str]:
    """The reasons for ``facts`` (as ``store.explain_facts`` returns them)."""
    task, now = facts["task"], facts["now"]
    state = TaskState(task["state"])
    if state in FINAL:
        return ["it has ended: there is nothing to wait for"]
    if state is TaskState.RUNNING:
        return [f"it is running on launcher {task['launcher_id']}"]
    if state is TaskState.CLAIMED:
        return [f"claimed by launcher {task['launcher_id']} and about to start"]
    if state is TaskState.AWAITING_PARENTS:
        waiting = [(pid, st) for pid, st in facts["parents"]
                   if TaskState(st) is not TaskState.JOB_FINISHED]
        listed = ", ".join(f"task {pid} ({st})" for pid, st in waiting) or "none left"
        return [f"waiting for {len(waiting)} parent(s): {listed}"]
    if state in (TaskState.STAGING_IN, TaskState.STAGING_OUT):
        what = "fetches its inputs" if state is TaskState.STAGING_IN else "ships its outputs"
        return [f"launcher {task['launcher_id']} {what} (stage_in/stage_out transfers); "
                "`balsam-futures show` has the transfer's history"]
    if state is TaskState.AWAITING_STAGE_IN:
        live = _live(facts["launchers"], now)
        if not live:
            return ["it waits for a launcher to fetch its inputs (stage_in), and no launcher "
                    "is alive: start one (balsam-futures launcher) or submit a batch job "
                    "(balsam-futures queue submit)"]
        return [f"it waits for a launcher's transfer thread to fetch its inputs (stage_in); "
                f"{len(live)} launcher(s) alive"]
    if state not in CLAIMABLE:
        return [f"it is {state.value}: no launcher takes a task in that state"]
    return _claimable_reasons(task, facts["launchers"], facts["ahead"], now)


def _live(launchers: list[Mapping[str, Any]], now: float) -> list[Mapping[str, Any]]:
    default_lease = setting("LEASE_SECONDS")
    return [launcher for launcher in launchers
            if launcher["heartbeat_at"] + (launcher["lease_s"] or default_lease) >= now]


def _claimable_reasons(task: Mapping[str, Any], launchers: list[Mapping[str, Any]],
                       ahead: int, now: float) -> list[str]:
    live = _live(launchers, now)
    if not live:
        return ["no live launcher: start one (balsam-futures launcher) or submit a batch job "
                "(balsam-futures queue submit)"]
    tags = task["tags"] or {}
    serving = [la for la in live if all(_serves(v, tags.get(k))
                                        for k, v in (la["info"].get("tags") or {}).items())]
    if not serving:
        served = "; ".join(f"launcher {la['id']}: {la['info'].get('tags')}" for la in live)
        return [f"no live launcher serves its tags {dict(tags)} ({served})"]
    nodes = {la["id"]: la["info"].get("nodes") or [] for la in serving}
    largest = max(len(n) for n in nodes.values())
    if task["num_nodes"] > largest:
        return [f"it needs {task['num_nodes']} nodes and the largest live launcher has "
                f"{largest}"]
    gpus = task["ranks_per_node"] * task["gpus_per_rank"]
    most_gpus = max((len(n.get("gpus") or []) for ns in nodes.values() for n in ns), default=0)
    if gpus > most_gpus:
        return [f"it needs {gpus} GPUs per node and the live launchers' nodes have at most "
                f"{most_gpus}"]
    big_enough = [la for la in serving if len(nodes[la["id"]]) >= task["num_nodes"]]
    expected = task["expected_s"] or 0.0
    left = [_wall_left(la, now) for la in big_enough]
    if expected > 0 and all(x is not None for x in left) and max(left) < expected:
        return [f"its expected run time ({expected:.0f} s) does not fit any live launcher's "
                f"remaining wall time (at most {max(left):.0f} s left)"]
    how = f"expected {expected:.0f} s" if expected > 0 else "run time unknown (claimed last)"
    how = f"{task['num_nodes']} node(s), {how}"
    if ahead:
        # Width comes between the two (wider runs first, ix_bf_tasks_order).
        return [f"{ahead} task(s) ahead of it by priority and expected length (priority "
                f"{task['priority']}, {how}; wider runs first)"]
    return [f"it is next in claim order (priority {task['priority']}, {how}); a launcher "
            "with room will claim it on its next round trip"]


def _wall_left(launcher: Mapping[str, Any], now: float) -> float | None:
    minutes = launcher["info"].get("wall_time_min")
    if minutes is None:
        return None
    return launcher["started_at"] + minutes * 60.0 - now


def _serves(wanted: str | list[str], value: str | None) -> bool:
    """Whether a launcher's tag filter (one value, or several: any of them) takes a task
    whose tag has ``value``."""
    return value in wanted if isinstance(wanted, list) else value == wanted
