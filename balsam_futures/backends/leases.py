"""Launchers' leases: registration, heartbeats, and the sweep that gives back what dead
launchers hold.

    launcher ──register_launcher──> bf_launchers row (RUNNING, its own lease_s)
             ──heartbeat / every exchange──> heartbeat_at = now, only while alive
    anyone   ──requeue_expired──> tasks of launchers not alive: CLAIMED→READY,
                                  RUNNING→RESTART_READY; silent ones marked EXPIRED

A launcher is alive while it is RUNNING and its heartbeat is within its own lease, counted
from the later of its heartbeat and the store's last blockage (statements/leases.py).
One that finds itself not alive gives back what it holds and gets ``LauncherFenced``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from .. import config
from ..errors import LauncherFenced
from ..tasks import LauncherState, TaskState
from . import statements as q
from .store import LauncherInfo

log = logging.getLogger(__name__)

#: A sweep that waited longer than this for the write lock judges nobody this time: while
#: the store was blocked, live launchers could not renew their leases either.
SWEEP_LOCK_WAIT_S = 0.5


class Leases:
    """Mixed into SqlStore."""

    def register_launcher(self, info: LauncherInfo) -> int:
        now = self.clock()
        lease = info.lease_s if info.lease_s is not None else config.setting("LEASE_SECONDS")
        if not (isinstance(lease, (int, float)) and math.isfinite(lease) and lease > 0):
            raise ValueError(f"a launcher's lease must be a finite number of seconds > 0, "
                             f"not {lease!r}")
        with self._raw_write() as cur:
            return self._exec(cur, "insert_launcher", {
                "hostname": info.hostname, "pid": info.pid,
                "state": LauncherState.RUNNING.value, "started_at": now, "heartbeat_at": now,
                "info": info.info, "batch_job_id": info.batch_job_id, "lease_s": float(lease),
            }).fetchone()[0]

    def _touch(self, cur: Any, launcher_id: int, asked: float, now: float) -> bool:
        """Heartbeat inside a write transaction; False if the launcher is not alive.

        Judged at ``asked``, when the launcher began the round trip: a launcher that waited
        for the store (another writer held SQLite's lock, paused, say) is not to blame for
        the wait, but one that was itself silent past its lease is fenced."""
        return self._exec(cur, "touch_launcher", {"lid": launcher_id, "asked": asked,
                                                  "now": now}).fetchone() is not None

    def _renew_or_fence(self, cur: Any, launcher_id: int, asked: float, now: float) -> bool:
        """``_touch`` in a write transaction; a launcher found not alive gives back what it
        holds (EXPIRED) there, and False says its caller must raise ``fenced``."""
        if self._touch(cur, launcher_id, asked, now):
            return True
        self._requeue(cur, [launcher_id], fenced_message(launcher_id), now,
                      LauncherState.EXPIRED)
        return False

    def heartbeat(self, launcher_id: int, *, asked: float | None = None) -> None:
        """Renew the lease of ``launcher_id``; raises ``LauncherFenced`` (after giving back
        what it holds) if it is no longer alive (``asked`` as for :meth:`exchange`)."""
        asked = self.clock() if asked is None else asked
        with self._raw_write() as cur:
            now = self.clock()
            alive = self._renew_or_fence(cur, launcher_id, asked, now)
        if not alive:
            raise fenced(launcher_id)

    def requeue_launchers(self, launcher_ids: Sequence[int], message: str) -> list[int]:
        """Give back the tasks ``launcher_ids`` hold (CLAIMED to READY, RUNNING to
        RESTART_READY) and mark them STOPPED."""
        with self._raw_write() as cur:
            return self._requeue(cur, list(launcher_ids), message, self.clock(),
                                 LauncherState.STOPPED)

    def _requeue(self, cur: Any, launcher_ids: list[int], message: str, now: float,
                 mark: LauncherState | None) -> list[int]:
        if not launcher_ids:
            return []
        rows = self._exec_once(cur, q.lock_held_by(launcher_ids), {}).fetchall()
        if rows:
            self._exec_once(cur, q.requeue([r[0] for r in rows]), {"now": now})
            self._insert_history(cur, [
                {"task_id": i, "from_state": state,
                 "to_state": q.REQUEUED_TO[TaskState(state)].value,
                 "at": now, "message": message}
                for i, state in rows
            ])
            self._announce_claimable(cur)
        if mark is not None:
            self._exec_many(cur, "set_launcher_state",
                            [{"lid": lid, "state": mark.value, "now": now}
                             for lid in launcher_ids])
        return [r[0] for r in rows]

    def requeue_expired(self, sweeper_id: int | None = None, *,
                        unreachable_until: float = 0.0) -> list[int]:
        """Requeue the tasks held by every launcher that is not alive: silent past its own
        lease (marked EXPIRED), or holding tasks whatever its recorded state.

        A launcher sweeping (``sweeper_id``) must be alive itself: one that was paused past
        its lease would judge the others by a stale view, so it is fenced instead
        (``LauncherFenced``).  A lease is counted from the later of a launcher's heartbeat
        and the end of the store's last blockage (a writer held SQLite's lock for long, so
        that nobody could renew a lease), and a sweep that itself waited long for the lock
        judges nobody this time.  ``unreachable_until``: when the sweeper last got through
        to the store after an outage: others may not have got through yet, so their leases
        are counted from then too.
        """
        now = self.clock()
        with self._raw_read() as cur:
            if not self._dead_holders(cur, now,
                                      max(self._blocked_until(cur), unreachable_until)):
                return []
        asked = now
        was_fenced = False
        with self._raw_write() as cur:
            now = self.clock()
            if sweeper_id is not None and not self._renew_or_fence(cur, sweeper_id, asked,
                                                                    now):
                was_fenced = True
                requeued: list[int] = []
            elif now - asked > SWEEP_LOCK_WAIT_S:
                # The store was blocked for everyone, so live launchers could not heartbeat
                # either: judge them once it is free again.
                log.info("lease sweep deferred: the store was blocked for %.1f s",
                         now - asked)
                return []
            else:
                blocked = max(self._blocked_until(cur), unreachable_until)
                # Again inside the write: a launcher may have heartbeated meanwhile.
                expired = [r[0] for r in self._exec(cur, "select_expired_launchers",
                                                    {"now": now, "blocked": blocked})]
                requeued = self._requeue(cur, expired, "launcher lease expired (no "
                                         "heartbeat within its lease)", now,
                                         LauncherState.EXPIRED)
                others = [i for i in self._dead_holders(cur, now, blocked)
                          if i not in set(expired)]
                requeued += self._requeue(cur, others, "launcher not alive (stopped or "
                                          "expired) but holding the task", now, None)
        if was_fenced:
            raise fenced(sweeper_id)
        return requeued

    def _blocked_until(self, cur: Any) -> float:
        row = self._exec(cur, "select_blocked", {}).fetchone()
        return float(row[0]) if row else 0.0

    def _dead_holders(self, cur: Any, now: float, blocked: float) -> list[int]:
        """Launchers that should lose their tasks: expired, or holding tasks while dead."""
        values = {"now": now, "blocked": blocked}
        ids = {r[0] for r in self._exec(cur, "select_expired_launchers", values)}
        ids.update(r[0] for r in self._exec(cur, "select_orphaned_launchers", values)
                   if r[0] is not None)
        return sorted(ids)

    def stop_launcher(self, launcher_id: int, message: str = "launcher stopped") -> list[int]:
        return self.requeue_launchers([launcher_id], message)


def fenced_message(launcher_id: int) -> str:
    """The history message of the tasks a fenced launcher gives back."""
    return (f"launcher {launcher_id} found its lease expired (it was silent longer than its "
            "lease); given back")


def fenced(launcher_id: int) -> LauncherFenced:
    """The error a launcher gets when the store finds its lease expired."""
    return LauncherFenced(f"launcher {launcher_id}'s lease expired (it was silent longer "
                          "than its lease); its tasks were given back")
