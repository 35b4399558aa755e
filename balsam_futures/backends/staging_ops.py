"""What a launcher's transfer thread asks of the store: tasks whose inputs it should fetch
(AWAITING_STAGE_IN -> STAGING_IN, under its lease), the tasks whose outputs it holds
(STAGING_OUT), and the moves when a transfer ends.

    transfer thread ──claim_staging──> STAGING_IN rows it took + STAGING_OUT rows it holds
                    ──end_staging───> in:  STAGED_IN -> READY      | FAILED (StagingError)
                                      out: STAGED_OUT -> JOB_FINISHED | FAILED (StagingError)

Both are write transactions that renew the launcher's lease, and refuse (LauncherFenced) a
launcher whose lease ran out; a move of a task it no longer holds (cancelled, or requeued
after its launcher was presumed lost) is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..tasks import TaskState
from .leases import fenced

S = TaskState


@dataclass(frozen=True)
class StagingTask:
    """A task a transfer thread works on."""

    id: int
    name: str
    tags: dict[str, str]
    workdir: str | None
    stage_in: list[list[str]]
    stage_out: list[list[str]]
    state: TaskState  # STAGING_IN or STAGING_OUT


@dataclass(frozen=True)
class StagingOutcome:
    """How one task's transfer ended: ``error`` (a pickled StagingError) None on success."""

    task_id: int
    state: TaskState  # the state it was in: STAGING_IN or STAGING_OUT
    message: str
    error: bytes | None = None


class StagingOps:
    """Mixed into SqlStore."""

    def staging_pending(self, launcher_id: int, tags: dict[str, str] | None = None) -> bool:
        """Whether a task waits for its inputs (with ``tags``) or launcher ``launcher_id``
        holds one whose outputs it must ship: a cheap read, before a claim's write."""
        with self._raw_read() as cur:
            if self._exec(cur, "any_awaiting_stage_in", {},
                          tuple(sorted((tags or {}).items()))).fetchone():
                return True
            return self._exec(cur, "select_staging_out_of",
                              {"lid": launcher_id}).fetchone() is not None

    def claim_staging(self, launcher_id: int, limit: int, tags: dict[str, str] | None = None,
                      *, skip_out: Sequence[int] = ()) -> list[StagingTask]:
        """Take up to ``limit`` tasks waiting for their inputs (AWAITING_STAGE_IN ->
        STAGING_IN), and list the tasks ``launcher_id`` holds in STAGING_OUT but those in
        ``skip_out`` (being shipped already).  Renews the lease; LauncherFenced if it ran
        out."""
        asked = self.clock()
        was_fenced = False
        taken: list[StagingTask] = []
        with self._raw_write() as cur:
            now = self.clock()
            if not self._renew_or_fence(cur, launcher_id, asked, now):
                was_fenced = True
            else:
                rows = self._exec(cur, "select_awaiting_stage_in", {"limit": limit},
                                  tuple(sorted((tags or {}).items()))).fetchall() \
                    if limit > 0 else []
                if rows:
                    self._exec_many(cur, "mark_staging_in", [
                        {"b_id": r[0], "b_lid": launcher_id, "b_now": now} for r in rows])
                    self._insert_history(cur, [
                        {"task_id": r[0], "from_state": S.AWAITING_STAGE_IN.value,
                         "to_state": S.STAGING_IN.value, "at": now,
                         "message": f"launcher {launcher_id} fetches its inputs"}
                        for r in rows])
                taken = [self._staging_task(r, S.STAGING_IN) for r in rows]
                skip = set(skip_out)
                taken += [self._staging_task(r, S.STAGING_OUT) for r in self._exec(
                    cur, "select_staging_out_of", {"lid": launcher_id}).fetchall()
                    if r[0] not in skip]
        if was_fenced:
            raise fenced(launcher_id)
        return taken

    def _staging_task(self, row: tuple, state: TaskState) -> StagingTask:
        staging = self._decode_json(row[4]) or {}
        return StagingTask(row[0], row[1], self._decode_json(row[2]), row[3],
                           staging.get("in", []), staging.get("out", []), state)

    def end_staging(self, launcher_id: int, outcomes: Sequence[StagingOutcome]) -> int:
        """Write how transfers ended; returns how many moves were written (a task no longer
        held by ``launcher_id`` is skipped).  LauncherFenced if its lease ran out."""
        if not outcomes:
            return 0
        asked = self.clock()
        was_fenced = False
        written = 0
        with self._raw_write() as cur:
            now = self.clock()
            if not self._renew_or_fence(cur, launcher_id, asked, now):
                was_fenced = True
            else:
                history: list[dict[str, Any]] = []
                ended: list[int] = []
                released = False
                for o in outcomes:
                    if o.error is not None:
                        path = (S.FAILED,)
                    elif o.state is S.STAGING_IN:
                        path = (S.STAGED_IN, S.READY)
                    else:
                        path = (S.STAGED_OUT, S.JOB_FINISHED)
                    final = path[-1]
                    moved = self._exec(cur, "end_staging", {
                        "b_id": o.task_id, "b_from": o.state.value, "b_lid": launcher_id,
                        "b_state": final.value, "b_error": o.error,
                        "b_keep": 0 if final is S.READY else 1, "b_now": now}).rowcount
                    if not moved:
                        continue
                    written += 1
                    states = [o.state, *path]
                    history += [{"task_id": o.task_id, "from_state": a.value,
                                 "to_state": b.value, "at": now,
                                 "message": o.message if k == 0 else ""}
                                for k, (a, b) in enumerate(zip(states, states[1:]))]
                    if final is S.READY:
                        released = True
                    else:
                        ended.append(o.task_id)
                self._insert_history(cur, history)
                if released:
                    self._announce_claimable(cur)
                self._release_children_of(cur, ended, now)
        if was_fenced:
            raise fenced(launcher_id)
        return written
