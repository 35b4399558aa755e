"""What a launcher asks of the store in its round trips: claim tasks that fit, record that runs
started and how they ended, and learn which of its runs to kill.

    launcher ──exchange(started, outcomes, offer)──> one write transaction, also a heartbeat:
               started:  CLAIMED→RUNNING (a start refused comes back as lost: stop that run)
               outcomes: RUNNING→JOB_FINISHED | RESTART_READY | FAILED ... (+ bf_runs rows)
               claim:    READY→CLAIMED under the launcher, as many as the offer fits
             <──Exchange(claimed ClaimedTasks, lost ids)──

Every part writes its history rows in that transaction.  The launcher's lease is checked
first (leases.py): a launcher found dead gives back what it holds and gets LauncherFenced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..tasks import FINAL, TaskState
from . import statements as q
from .connection import _blob
from .leases import fenced
from .store import ClaimedTask, ClaimOffer, Exchange, TaskOutcome

log = logging.getLogger(__name__)


class LauncherOps:
    """Mixed into SqlStore."""

    def _claim_rows(self, cur: Any, launcher_id: int, limit: int, offer: ClaimOffer,
                    now: float, already: Sequence[tuple] = ()) -> list[tuple]:
        """Move up to ``limit`` claimable tasks that ``offer`` accepts to CLAIMED; returns
        their CLAIM_COLUMNS rows (with the state they left) in claim order.  ``already``:
        rows this transaction claimed before, which the fit must count as placed."""
        values = {"limit": limit}
        if offer.max_wall_s is not None:
            values["max_wall"] = offer.max_wall_s
        rows = self._exec(cur, "select_claimable", values, *offer.statement_key()).fetchall()
        if offer.fit is not None and rows:
            # Resource-aware: the launcher says which of the candidates it can start, inside
            # this transaction, so it never holds work it has no room for.  Usually all the
            # first ``limit`` fit; if not, look further down the queue (backfill).
            candidates = [*already, *rows]
            chosen = offer.fit([_ClaimRow(r) for r in candidates])
            if len(chosen) < len(candidates) and offer.window and offer.window > limit:
                values["limit"] = offer.window
                rows = self._exec(cur, "select_claimable", values,
                                  *offer.statement_key()).fetchall()
                candidates = [*already, *rows]
                chosen = offer.fit([_ClaimRow(r) for r in candidates])
            rows = [candidates[i] for i in chosen if i >= len(already)][:limit]
        if rows:
            self._exec_many(cur, "mark_claimed", [
                {"b_id": r[0], "b_lid": launcher_id, "b_now": now} for r in rows
            ])
        return rows

    def claim(self, launcher_id: int, limit: int, *, max_nodes: int | None = None,
              tags: dict[str, str] | None = None, max_gpus: int | None = None,
              offer: ClaimOffer | None = None) -> list[ClaimedTask]:
        """Atomically move up to ``limit`` claimable tasks to CLAIMED under ``launcher_id``."""
        return self.record_and_claim(launcher_id, (), limit, max_nodes=max_nodes, tags=tags,
                                     max_gpus=max_gpus, offer=offer)

    def unfit_tasks(self, max_nodes: int, max_gpus: int, tags: dict[str, str] | None = None,
                    limit: int = 10) -> list[tuple[int, int, int]]:
        """Claimable tasks a launcher of ``max_nodes`` nodes with ``max_gpus`` GPUs each can
        never run: (id, nodes, GPUs per node), first ``limit``."""
        with self._raw_read() as cur:
            return [tuple(r) for r in self._exec(
                cur, "select_unfit", {"max_nodes": max_nodes, "max_gpus": max_gpus,
                                      "limit": limit},
                tuple(sorted((tags or {}).items()))).fetchall()]

    def record_outcomes(self, launcher_id: int, outcomes: Sequence[TaskOutcome]) -> int:
        """Write results of runs held by ``launcher_id`` in one transaction; returns how many
        were written.

        An outcome for a task the launcher no longer holds (its lease expired and the task
        was requeued) is dropped with a warning.
        """
        if not outcomes:
            return 0
        now = self.clock()
        with self._raw_write() as cur:
            return self._record(cur, launcher_id, outcomes, now)

    def record_and_claim(self, launcher_id: int, outcomes: Sequence[TaskOutcome], limit: int,
                         *, max_nodes: int | None = None,
                         tags: dict[str, str] | None = None,
                         max_gpus: int | None = None,
                         offer: ClaimOffer | None = None) -> list[ClaimedTask]:
        """Record outcomes and claim up to ``limit`` tasks, in one transaction (see
        :meth:`exchange`); returns the claimed tasks."""
        if offer is None:
            offer = ClaimOffer(max_nodes=max_nodes, tags=dict(tags or {}), max_gpus=max_gpus)
        return self.exchange(launcher_id, (), outcomes, limit, offer).claimed

    def exchange(self, launcher_id: int, started: Sequence[int],
                 outcomes: Sequence[TaskOutcome], limit: int,
                 offer: ClaimOffer | None = None, *, asked: float | None = None) -> Exchange:
        """One launcher round trip, in one transaction: runs that started (CLAIMED→RUNNING),
        outcomes, and a claim of up to ``limit`` tasks that ``offer`` accepts.

        A launcher's steady state is "some tasks started, some ended, claim as many": one
        commit for all three, which is also its heartbeat.  Raises ``LauncherFenced`` (after
        giving back what it holds) if the launcher is no longer alive.

        ``asked``: when the launcher began trying to reach the store (default now; earlier
        if its attempts failed meanwhile): its lease is judged then, so an outage it rode
        out is not held against it.
        """
        offer = offer or ClaimOffer()
        if not outcomes and limit <= 0 and not started:
            return Exchange([], [])
        asked = self.clock() if asked is None else asked
        was_fenced = False
        self._local.released = False  # set by _announce_claimable
        with self._raw_write() as cur:
            now = self.clock()  # after any wait for the write lock
            if not outcomes:
                # Claims, starts and the lease renewal only: should the database server crash
                # before they reach its disk, the tasks are found CLAIMED or READY again, the
                # launcher's writes about them are refused, and they run again, as for a lost
                # launcher.  No result is ever lost this way; outcomes wait for the disk.
                self._commit_without_flush(cur)
            if not self._renew_or_fence(cur, launcher_id, asked, now):
                was_fenced = True
            else:
                # Runs that also ended are recorded by their outcome (see _record).  The history
                # rows of all three parts go in one statement, at the end.
                ended = {o.task_id for o in outcomes}
                history: list[dict[str, Any]] = []
                learned: list[TaskOutcome] = []
                lost = self._started(cur, launcher_id, [i for i in started if i not in ended],
                                     now, history)
                if outcomes:
                    self._record(cur, launcher_id, outcomes, now, history,
                                 claimed_first=ended.intersection(started), learned=learned)
                rows = []
                if limit > 0:
                    # Expected run times of new tasks, and the starvation guard (estimates.py).
                    rows = self._claim_rows(cur, launcher_id, limit,
                                            self._prepare_claim(cur, offer, now), now)
                    self._remember_keys(rows, _NAME, _LABEL)
                history += [{"task_id": r[0], "from_state": r[1],
                             "to_state": TaskState.CLAIMED.value, "at": now,
                             "message": f"claimed by launcher {launcher_id}"} for r in rows]
                self._insert_history(cur, history)
                parents: dict[int, dict[int, bytes | None]] = {}
                needy = [r[0] for r in rows if r[_NUM_PARENTS]]
                if needy:
                    for child, parent, result in self._exec_once(
                            cur, q.select_parent_results(needy), {}).fetchall():
                        parents.setdefault(child, {})[parent] = _blob(result)
                # Last: a kind's estimate row is shared by every launcher running that kind,
                # so it is held from here to the commit only (estimates.py).
                self._learn(cur, learned, now)
        if was_fenced:
            raise fenced(launcher_id)
        return Exchange([self._claimed_task(r, parents) for r in rows], lost,
                        released=self._local.released)

    def _claimed_task(self, row: tuple, parents: dict[int, dict[int, bytes | None]]
                      ) -> ClaimedTask:
        fields = dict(zip(_CLAIM_NAMES, row))
        del fields["state"], fields["label"]
        fields["tags"] = self._decode_json(fields["tags"])
        fields["data"] = self._decode_json(fields["data"])
        fields["payload"] = _blob(fields["payload"])
        fields["auto_timeout_retry"] = bool(fields["auto_timeout_retry"])
        fields["parent_results"] = parents.get(fields["id"], {})
        if fields["staging"] is not None:
            fields["staging"] = self._decode_json(fields["staging"])
            if fields["workdir"] is None:
                # Its files were staged where a shell task would run; it runs there too.
                from .._shell_run import relative_default_workdir

                fields["workdir"] = relative_default_workdir(fields["name"], fields["tags"],
                                                             fields["id"])
        return ClaimedTask(**fields)

    def _started(self, cur: Any, launcher_id: int, ids: Sequence[int], now: float,
                 history: list[dict[str, Any]]) -> list[int]:
        """Record that runs of tasks ``ids`` started (CLAIMED→RUNNING; their history rows are
        added to ``history``); returns the ids this launcher no longer holds (cancelled or
        requeued meanwhile)."""
        ids = list(dict.fromkeys(ids))  # a resend names a task twice: one move, one row
        if not ids:
            return []
        moved = self._mark_started(cur, launcher_id, ids, now)
        history += [{"task_id": i, "from_state": TaskState.CLAIMED.value,
                     "to_state": TaskState.RUNNING.value, "at": now, "message": ""}
                    for i in ids if i in moved]
        rest = [i for i in ids if i not in moved]
        if not rest:
            return []
        # Those RUNNING here already (a run handed back and started again) are not lost.
        again = {r[0] for r in self._exec_once(
            cur, q.select_running_of(launcher_id, rest), {}).fetchall()}
        return [i for i in rest if i not in again]

    def _record(self, cur: Any, launcher_id: int, outcomes: Sequence[TaskOutcome],
                now: float, history: list[dict[str, Any]] | None = None,
                claimed_first: set[int] | frozenset[int] = frozenset(),
                learned: list[TaskOutcome] | None = None) -> int:
        """Write outcomes of runs ``launcher_id`` holds; their history rows go to ``history``
        (else they are inserted here).  ``claimed_first``: tasks known to be CLAIMED still
        (their runs started and ended since the last round trip)."""
        unique = list({o.task_id: o for o in reversed(outcomes)}.values())[::-1]
        params = [{
            "b_id": o.task_id, "b_lid": launcher_id, "b_state": o.path[-1].value,
            "b_result": o.result, "b_error": o.error, "b_rc": o.return_code,
            "b_inc": 1 if o.path[-1] is TaskState.RESTART_READY else 0, "b_now": now,
        } for o in unique]
        # An outcome means its run started: one whose task was still CLAIMED (it started and
        # ended since the last round trip, or its start was never reported) gets its
        # CLAIMED→RUNNING row first, so every history chain is unbroken.
        written = self._finish_running(cur, params, claimed_first)
        kept = [o for o in unique if o.task_id in written]
        if any(o.path[-1] is TaskState.RESTART_READY for o in kept):
            self._announce_claimable(cur)
        if len(kept) != len(outcomes):
            log.warning("launcher %s: %d outcome(s) dropped (task no longer held, or sent "
                        "twice)", launcher_id, len(outcomes) - len(kept))
        if learned is None:
            self._learn(cur, kept, now)  # run-time estimates (estimates.py)
        else:
            learned.extend(kept)  # learned by the caller at the end of its transaction
        runs = [o for o in kept if o.run is not None]
        if runs:
            # Most runs of a launcher share a few placements: encode each JSON value once.
            processors = self._stmt("insert_runs").processors
            encoded: dict[tuple, tuple[str, str]] = {}
            rows = []
            for o in runs:
                key = (tuple(o.run["hosts"]), tuple(map(tuple, o.run["gpus"])))
                if key not in encoded:
                    encoded[key] = (processors["hosts"](list(key[0])),
                                    processors["gpus"]([list(g) for g in key[1]]))
                hosts, gpus = encoded[key]
                rows.append({"task_id": o.task_id, "launcher_id": launcher_id, "hosts": hosts,
                             "gpus": gpus, "num_nodes": len(key[0]), "cores": o.run["cores"],
                             "node_share": o.run["share"], "started_at": o.run["started_at"],
                             "ended_at": o.run["ended_at"], "state": o.path[0].value})
            self._exec_many(cur, "insert_runs", rows, processed=frozenset({"hosts", "gpus"}))
        rows = [
            {"task_id": o.task_id, "from_state": TaskState.CLAIMED.value,
             "to_state": TaskState.RUNNING.value, "at": now, "message": ""}
            for o in kept if written[o.task_id] == TaskState.CLAIMED.value
        ] + [
            {"task_id": o.task_id,
             "from_state": (o.path[k - 1] if k else TaskState.RUNNING).value,
             "to_state": state.value, "at": now, "message": o.message if k == 0 else ""}
            for o in kept for k, state in enumerate(o.path)
        ]
        if history is None:
            self._insert_history(cur, rows)
        else:
            history += rows
        self._release_children_of(cur, [o.task_id for o in kept if o.path[-1] in FINAL], now)
        return len(kept)

    def kill_requests(self, launcher_id: int) -> list[int]:
        """Ids of the tasks ``launcher_id`` runs that were asked to be killed."""
        with self._raw_read() as cur:
            return [r[0] for r in self._exec(cur, "select_kill_requests", {"lid": launcher_id})]


_CLAIM_NAMES = [c.name for c in q.CLAIM_COLUMNS]
#: Where num_parents sits in a claim row (a launcher fetches parents' results only if > 0).
_NUM_PARENTS = _CLAIM_NAMES.index("num_parents")
#: Where the name and the ``kind=`` label sit: a claimed task's estimate key.
_NAME, _LABEL = _CLAIM_NAMES.index("name"), _CLAIM_NAMES.index("label")


class _ClaimRow:
    """A claim candidate as ``ClaimOffer.fit`` sees it (a ``store.FitRow``): the task's id
    and resource fields, read from a claim row by column name."""

    __slots__ = _FIT_FIELDS = ("id", "num_nodes", "ranks_per_node", "threads_per_rank",
                               "gpus_per_rank", "node_packing_count", "wall_time_s")

    def __init__(self, row: tuple) -> None:
        for name, index in _FIT_INDEXES:
            setattr(self, name, row[index])


_FIT_INDEXES = tuple((name, _CLAIM_NAMES.index(name)) for name in _ClaimRow._FIT_FIELDS)
