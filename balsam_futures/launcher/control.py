"""A launcher's store thread: its round trips, and the jobs it runs on a period.

    every pass:        round_trip   starts + outcomes + claim, one transaction (a heartbeat)
    on a period:       poll_kills   kill requests for the runs it holds (KILL_POLL)
                       heartbeat    when no round trip renewed the lease (lease / 4)
                       sweep        requeue the tasks of launchers that are not alive (SWEEP_S)
                       warn_unfit   name the tasks too large for this launcher (UNFIT_CHECK_S)
                       warn_too_long   name the kinds expected to outlast its wall time
                       idle_timeout stop after --idle-timeout seconds with nothing to do
    between passes:    sleep        POLL_MIN..POLL_MAX, or until the store announces a change

Each job is a method of ``StoreLoop`` that can be run alone (tests drive them with a fake
store and a fake clock); ``Every`` says when a periodic one is due and ``ClaimSizer`` how many
tasks to hold.  Only this thread talks to the store (and the transfer thread, stager.py,
which writes only staging states).  Errors: an unreachable store is retried
with back-off, keeping the outcomes; a refused round trip writes its outcomes one by one; a
fenced launcher (``LauncherFenced``) stops; anything else stops the launcher with a log line
instead of leaving it hung.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..backends.store import ClaimOffer, LauncherStore, TaskOutcome
from ..errors import LauncherFenced, StoreError, StoreRejected
from ..serialization import dump_exception
from ..tasks import TaskState
from .backoff import back_off, next_poll

if TYPE_CHECKING:
    from .pilot import Pilot

log = logging.getLogger(__name__)

#: The backlog of claimed tasks covers this much work at the recent rate, between one and
#: BACKLOG_MAX_PER_WORKER tasks per worker.  Longer means fewer, larger transactions (tiny
#: tasks go faster: 2,600 transactions for 20,000 no-ops instead of 7,000); shorter keeps more
#: of the queue cancellable and spread over other launchers.  Long tasks get one per worker.
BACKLOG_SECONDS = 0.02
BACKLOG_MAX_PER_WORKER = 64
#: Under load (backlog at least half full) the store thread waits this long for more
#: outcomes before committing, so one transaction carries several; it never delays a lone
#: task, whose backlog is empty.  1, 2, 4 and 8 ms measured on 2 cores (no-ops, /bin/true,
#: 10 ms sleeps): 4 ms carried the most per transaction without starving the workers, 8 ms
#: cost the 10 ms sleeps 1.5 points of efficiency; the differences are near the noise.  Never
#: while a run waits for its start to be recorded (handoff.py): its worker is idle meanwhile.
COALESCE_SECONDS = 0.004
#: Store poll interval right after activity: a new task is seen within this time.  Each poll
#: is one ``changed()`` probe (a few microseconds on SQLite).
POLL_MIN = 0.001
#: Poll interval when idle: bounds the latency of the first task after a quiet spell; smaller
#: costs idle CPU on every launcher.
POLL_MAX = 0.05
#: Kill requests are looked for whenever the store reports a change, and at least this often.
KILL_POLL = 0.5
#: ... but not more often than this: under a stream of submissions the store changes on every
#: loop, and a kill query per loop was a tenth of the launcher's time per no-op task.
KILL_POLL_MIN = 0.05
#: With a store that announces changes, the longest sleep between looks at the store anyway
#: (a lost notification costs at most this much latency).
NOTIFY_FALLBACK_POLL = 1.0
#: How long after the last activity polling stays at POLL_MIN.
ACTIVE_WINDOW = 2.0
#: Heartbeats per lease.  Several, so one slow write does not get a live launcher's tasks
#: requeued.  (Every round trip renews the lease too.)
BEATS_PER_LEASE = 4
#: How often this launcher requeues the tasks of launchers that are not alive, each judged
#: by its own lease: a dead peer's tasks come back within its lease plus this.  One indexed
#: read when nobody died.
SWEEP_S = 2.0
#: Backoff while the store is unreachable: first and longest wait between retries.
RETRY_MIN, RETRY_MAX = 0.1, 10.0
#: A resource-aware claim that finds tasks it has no room for looks this many candidates past
#: the ones it wants, to backfill around large tasks that do not fit yet.
CLAIM_LOOKAHEAD = 32
#: The start of a short run (one of a kind the worker pool saw end quickly, workers/pool.py)
#: is written at most this late: a run that ends sooner has its start written with its
#: outcome, in one transaction.  Longer delays RUNNING (and a cancel's discovery that the run
#: had begun); shorter costs short tasks a round trip each.  Other runs in the warm workers
#: wait for their start to be written before they begin (handoff.py): else a long run could
#: be cancelled as "not started" while it ran (it was then killed), which
#: ProcessPoolExecutor never does to a running call.
START_RECORD_DELAY_S = 0.05
#: How long a claim that found nothing more to take is believed without news: outcomes
#: written meanwhile claim nothing (see StoreLoop.round_trip).  A bound on how late a task
#: that another launcher's claim held locked, and gave back, is seen.
EXHAUSTED_TRUST_S = 1.0
#: While idle, look this often for claimable tasks too large for this launcher (and warn).
UNFIT_CHECK_S = 30.0


class Every:
    """A periodic job's timer: ``due(now)`` is true once per ``period``."""

    def __init__(self, period: float, now: float) -> None:
        self.period = period
        self.last = now

    def due(self, now: float) -> bool:
        if now - self.last >= self.period:
            self.last = now
            return True
        return False


class ClaimSizer:
    """How many tasks the launcher holds (running and claimed): BACKLOG_SECONDS of work at
    the recent rate of finished tasks, at least one per worker and at most
    BACKLOG_MAX_PER_WORKER per worker."""

    def __init__(self, workers: int, now: float) -> None:
        self.target = workers
        self.rate = 0.0  # tasks finished per second, smoothed
        self._since = now

    def observe(self, finished: int, workers: int, now: float) -> None:
        if finished and now > self._since:
            self.rate = 0.8 * self.rate + 0.2 * finished / (now - self._since)
            self.target = min(max(workers, int(self.rate * BACKLOG_SECONDS)),
                              BACKLOG_MAX_PER_WORKER * workers)
        self._since = now

    def depth(self, workers: int) -> int:
        """Rounds of single-node work each node may hold at once (see fit_claim)."""
        return max(1, math.ceil(self.target / workers))


class StoreLoop:
    """The store thread of ``pilot``, talking to ``store`` as launcher ``launcher_id``."""

    def __init__(self, pilot: Pilot, store: LauncherStore, launcher_id: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.pilot = pilot
        self.store = store
        self.lid = launcher_id
        self.clock = clock
        self.sleep = sleep
        self.handoff = pilot.handoff
        self.placer = pilot.placer
        self.tags = dict(pilot.cfg.tags)
        now = clock()
        self.sizer = ClaimSizer(pilot.workers, now)
        self.heartbeats = Every(pilot.lease / BEATS_PER_LEASE, now)
        self.sweeps = Every(SWEEP_S, now)
        self.unfit_checks = Every(UNFIT_CHECK_S, now - UNFIT_CHECK_S)
        self.wall_checks = Every(UNFIT_CHECK_S, now - UNFIT_CHECK_S)  # warn_too_long
        self.last_kill_check = now
        self.last_activity = now
        self.more = True  # the store may hold claimable tasks we have not seen
        #: When a claim last found nothing more to take (None: it may hold more).
        self.exhausted_at: float | None = None
        self.poll = POLL_MIN
        self.retry = RETRY_MIN
        #: Store time of the first failed attempt of an outage under way (None: the last
        #: attempt got through), and of the end of the last outage: the launcher's lease is
        #: judged from when it began trying, and peers' from when it got through again.
        self.failing_since: float | None = None
        #: When starts were first held back waiting for outcomes to share a transaction.
        self.starts_since: float | None = None
        self.reachable_since = 0.0

    def run(self) -> None:
        try:
            while self.one_pass():
                pass
        except BaseException:  # noqa: BLE001 - a dead store thread would hang the launcher
            log.exception("the launcher's store thread failed; stopping the launcher")
            self.pilot.request_stop("its store thread failed")

    def one_pass(self) -> bool:
        """One round trip and the periodic jobs due; False once the thread should end."""
        pilot, handoff = self.pilot, self.handoff
        workers = pilot.workers  # fewer if the agents fail to start
        if (handoff.pending_outcomes() < workers * 4 and self.placer.backlog
                and len(self.placer.backlog) >= self.sizer.target // 2
                and pilot.stop_reason is None and not handoff.awaiting()):
            self.sleep(COALESCE_SECONDS)  # a deliberate delay: see COALESCE_SECONDS
        started, outcomes = handoff.take()
        stopping = pilot.stop_reason is not None
        if stopping:
            started = handoff.withdraw_held(started)
        attempt_at = self.store.clock()
        try:
            news = self.store.changed()
            self.more = self.more or news  # remembered until there is room to claim
            self.round_trip(started, outcomes, stopping)
            now = self.clock()
            self.poll_kills(now, news)
            if handoff.idle and self.unfit_checks.due(now):
                self.placer.warn_unfit(self.store, self.tags)
            wall_left = pilot.wall_left()
            if wall_left is not None and self.wall_checks.due(now):
                self.placer.warn_too_long(self.store, self.tags, wall_left)
            if self.heartbeats.due(now):
                self.store.heartbeat(self.lid, asked=self.failing_since)
            if self.failing_since is not None:  # got through again
                self.failing_since = None
                self.reachable_since = self.store.clock()
            if self.sweeps.due(now) and self.store.requeue_expired(
                    self.lid, unreachable_until=self.reachable_since):
                self.more = True
            self.retry = RETRY_MIN
        except LauncherFenced as exc:
            # Not alive as far as the store is concerned: its tasks went back, and another
            # launcher may run them now.  Claim nothing more; kill the runs and exit.
            log.error("%s: stopping, and killing %d run(s)", exc, handoff.running)
            pilot.fenced = True
            pilot.request_stop("lease expired (fenced)")
            return False
        except StoreRejected as exc:
            # Not an outage: something in this round trip can never be written.  Write each
            # outcome alone, so one bad value fails only its own task.
            log.error("the store refused a round trip (%s); writing its %d outcome(s) one by "
                      "one", exc, len(outcomes))
            self.write_alone(started, outcomes)
            return True
        except StoreError as exc:
            # Keep the outcomes and try again: results produced during an outage are written
            # when the store comes back.
            handoff.give_back(started, outcomes)
            if self.failing_since is None:
                self.failing_since = attempt_at
            log.warning("store unavailable, retrying in %.1f s: %s", self.retry, exc)
            self.sleep(self.retry)
            # Never longer than a heartbeat period: peers that got through first count this
            # launcher's lease from then, so a back-off past its lease got it fenced (and its
            # tasks run again) for an outage it had ridden out (2 s leases, a server restart).
            self.retry = back_off(self.retry, min(RETRY_MAX, pilot.lease / BEATS_PER_LEASE))
            return True
        if stopping and not handoff.pending_outcomes():
            return False
        self.idle_timeout()
        self.wait()
        return True

    # -- the jobs ----------------------------------------------------------------------------

    def round_trip(self, started: list[int], outcomes: list[TaskOutcome],
                   stopping: bool) -> None:
        """Starts, outcomes and a claim sized to the room left, in one transaction."""
        pilot, placer, sizer = self.pilot, self.placer, self.sizer
        workers = pilot.workers
        # Running tasks count against the target: the dispatcher moved them out of the
        # backlog into workers, and the backlog should only cover what frees up next.
        room = 0 if stopping else sizer.target - len(placer.backlog) - self.handoff.running
        # A finished run frees resources: claim again even if the store had nothing new,
        # since candidates skipped for lack of room may fit now; unless the last claim saw
        # every claimable task and took them all (tasks one at a time: two statements and a
        # history row less in each outcome's transaction, the one the master waits for).
        exhausted = (self.exhausted_at is not None
                     and self.clock() - self.exhausted_at < EXHAUSTED_TRUST_S)
        want = room if room > 0 and (self.more or (outcomes and not exhausted)) else 0
        wall_left = pilot.wall_left()
        if wall_left is not None and wall_left <= 0:
            want = 0
        if not (outcomes or want or started):
            return
        if started and not outcomes and not want and not self.handoff.urgent:
            # Only starts of short runs to write: wait a little for their outcomes, so that a
            # short run's start and end share one transaction (else each task cost one more
            # round trip).
            now = self.clock()
            if self.starts_since is None:
                self.starts_since = now
            if now - self.starts_since < START_RECORD_DELAY_S:
                self.handoff.give_back(started, [])
                return
        self.starts_since = None
        placer.claim_want = want
        placer.claim_depth = sizer.depth(workers)
        placer.turned_away = False
        offer = ClaimOffer(max_nodes=placer.nodes.num_nodes, tags=self.tags,
                           max_gpus=placer.max_node_gpus, max_wall_s=wall_left,
                           fit=placer.fit, window=want + CLAIM_LOOKAHEAD)
        trip = self.store.exchange(self.lid, started, outcomes, want, offer,
                                   asked=self.failing_since)
        if started or outcomes:
            pilot.tell_executor()
        self.refused_starts(started, trip.lost)
        now = self.clock()
        self.heartbeats.last = now  # the round trip renewed the lease
        pilot.finished += len(outcomes)
        sizer.observe(len(outcomes), workers, now)
        if want:
            self.more = len(trip.claimed) == want or trip.released
            # Fewer than asked, none turned away for lack of room: the store holds nothing
            # more for this launcher until it announces a change (its change probe) or this
            # round trip's own writes made tasks claimable (retries, released children).
            # Trusted for EXHAUSTED_TRUST_S only: a PostgreSQL claim skips rows that another
            # launcher's claim holds locked, and those may be given back unannounced.
            self.exhausted_at = now if not (self.more or placer.turned_away) else None
        elif (outcomes and not exhausted) or trip.released:
            # Runs ended while there was no room to ask for more: the candidates skipped for
            # lack of room may fit now, whether or not the store announces anything new.
            self.more = True
        if trip.claimed:
            placer.add_claimed(trip.claimed)
            self.handoff.dispatcher_waker.set()
        if outcomes or trip.claimed:
            self.last_activity = now

    def refused_starts(self, started: list[int], lost: list[int]) -> None:
        """Starts written, ``lost`` refused: held runs go or are dropped unrun (Handoff);
        runs already going whose tasks were cancelled or requeued meanwhile are stopped."""
        going = self.handoff.recorded(started, lost) if started else list(lost)
        if going:
            log.info("task(s) %s were cancelled or requeued before they started here; "
                     "stopping their runs", going)
            self.handoff.kill(going)

    def poll_kills(self, now: float, news: bool) -> None:
        """Look for kill requests of the runs this launcher holds: on news (not more often
        than KILL_POLL_MIN) and at least every KILL_POLL, while it holds any."""
        since = now - self.last_kill_check
        if not ((news and since >= KILL_POLL_MIN) or since >= KILL_POLL):
            return
        if not (self.handoff.running or self.placer.backlog):
            return
        self.last_kill_check = now
        kills = self.store.kill_requests(self.lid)
        if kills:
            self.handoff.kill(kills)

    def idle_timeout(self) -> None:
        idle_timeout = self.pilot.cfg.idle_timeout
        quiet = self.clock() - self.last_activity
        if self.pilot.staging_busy:  # transfers are work too
            self.last_activity = self.clock()
            return
        if idle_timeout is not None and self.handoff.idle and quiet >= idle_timeout:
            self.pilot.request_stop(f"idle for {idle_timeout:g} s")

    def wait(self) -> None:
        """Sleep until the next pass: short while active, longer when quiet, or until the
        store announces a change (PostgreSQL NOTIFY)."""
        quiet = self.clock() - self.last_activity
        self.poll = next_poll(self.poll, quiet, POLL_MIN, POLL_MAX, ACTIVE_WINDOW)
        if self.handoff.pending_outcomes() or self.pilot.stop_reason is not None:
            return
        limit = NOTIFY_FALLBACK_POLL
        if self.starts_since is not None:  # starts held back: write them when they are due
            limit = max(0.0, self.starts_since + START_RECORD_DELAY_S - self.clock())
        # Asked each time: after an outage the store listens on a new connection.
        notify_fd = self.store.notify_fd()
        if notify_fd is None:
            self.handoff.store_waker.wait(min(self.poll, limit))
        else:
            self.handoff.store_waker.wait(limit, also=[notify_fd])

    def write_alone(self, started: list[int], outcomes: list[TaskOutcome]) -> None:
        """After a refused round trip: starts, then each outcome in its own transaction; an
        outcome the store refuses becomes its task's failure, with the database's words."""
        store, lid = self.store, self.lid
        ended = {o.task_id for o in outcomes}
        alone = [i for i in started if i not in ended]
        self.refused_starts(alone, store.exchange(lid, alone, [], 0).lost)
        for o in outcomes:
            own = [o.task_id] if o.task_id in started else []
            try:
                store.exchange(lid, own, [o], 0)
            except StoreRejected as exc:
                err = StoreRejected(f"the outcome of task {o.task_id} could not be stored: "
                                    f"{exc}")
                log.error("%s; the task fails", err)
                failed = TaskOutcome(o.task_id, (TaskState.RUN_ERROR, TaskState.FAILED),
                                     error=dump_exception(err, f"Task {o.task_id} on "
                                                          f"launcher {lid}"),
                                     message=str(err)[:500], run=o.run)
                try:
                    store.exchange(lid, own, [failed], 0)
                except StoreRejected:
                    log.exception("task %d: even its failure cannot be stored; it is "
                                  "requeued when this launcher stops", o.task_id)
        self.pilot.finished += len(outcomes)
