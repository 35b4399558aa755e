"""The launcher's parts, each alone: timers, claim sizing, the store thread's jobs against a
fake store and a fake clock, the placer, the worker pool, and a whole Pilot in this process.

The subprocess tests (tests/integration) cover launchers as users start them; these show each
part's rule directly, without sleeping on the wall clock.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time

import pytest
from clocks import FakeClock

from balsam_futures.backends import open_store
from balsam_futures.backends.store import ClaimedTask, Exchange, TaskOutcome
from balsam_futures.errors import LauncherFenced, StoreRejected, StoreUnavailable
from balsam_futures.launcher import control
from balsam_futures.launcher.config import LauncherConfig
from balsam_futures.launcher.control import ClaimSizer, Every, StoreLoop
from balsam_futures.launcher.handoff import Handoff
from balsam_futures.launcher.nodes import NodeSpec
from balsam_futures.launcher.pilot import Pilot
from balsam_futures.launcher.placement import Placer
from balsam_futures.launcher.workers import WorkerPool
from balsam_futures.serialization import dump_call, dump_callable, load_result
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState

pytestmark = pytest.mark.timeout(60)
S = TaskState



class FakeStore:
    """A stand-in for ``LauncherStore`` that records what it is asked."""

    display_url = "fake://"
    clock = staticmethod(time.time)

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail_with: BaseException | None = None
        self.reject: set[int] = set()  # outcomes of these tasks are refused
        self.kills: list[int] = []
        self.claimable: list[ClaimedTask] = []
        self.news = False  # what changed() says next (once)
        self.released = False  # what the next exchange says of its own writes
        self.lose: set[int] = set()  # starts of these tasks are refused (cancelled meanwhile)
        self.on_exchange = lambda: None

    def changed(self) -> bool:
        news, self.news = self.news, False
        return news

    def notify_fd(self):
        return None

    def exchange(self, lid, started, outcomes, limit, offer=None, *, asked=None):
        self.calls.append(("exchange", list(started), [o.task_id for o in outcomes], limit,
                           asked))
        if self.fail_with is not None:
            raise self.fail_with
        if any(o.task_id in self.reject and o.path[-1] is not S.FAILED for o in outcomes):
            raise StoreRejected("refused")
        claimed, self.claimable = self.claimable[:limit], self.claimable[limit:]
        self.on_exchange()
        released, self.released = self.released, False
        return Exchange(claimed, [i for i in started if i in self.lose], released=released)

    def heartbeat(self, lid, *, asked=None):
        self.calls.append(("heartbeat",))

    def requeue_expired(self, sweeper_id=None, *, unreachable_until=0.0):
        self.calls.append(("sweep", sweeper_id))
        return []

    def kill_requests(self, lid):
        self.calls.append(("kill_requests",))
        return self.kills

    def unfit_tasks(self, *args, **kwargs):
        return []

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def claimed(task_id: int) -> ClaimedTask:
    return ClaimedTask(task_id, "t", "python", b"", {}, {}, 1, 1, 1, 0, 0, None, 0, 0, True,
                       None)


def done(task_id: int) -> TaskOutcome:
    return TaskOutcome(task_id, (S.RUN_DONE, S.JOB_FINISHED), result=pickle.dumps(task_id))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def loop(clock):
    """A StoreLoop of a Pilot that is not running, on a fake store and clock."""
    cfg = LauncherConfig(num_workers=2, lease_seconds=8.0, idle_timeout=5.0)
    store = FakeStore()
    pilot = Pilot("fake://", cfg, store=store)
    pilot.placer = Placer([NodeSpec("localhost", 2, ())], cfg, head_nodes={0},
                          mpi_launcher="mpich")
    pilot.launcher_id = 1
    sleeps: list[float] = []
    loop = StoreLoop(pilot, store, 1, clock=clock, sleep=sleeps.append)
    loop.wait = lambda: None  # no sleeping between passes here
    loop.sleeps = sleeps
    return loop


class TestTimers:
    def test_every_is_due_once_per_period(self, clock):
        timer = Every(2.0, clock())
        assert not timer.due(clock())
        clock.advance(1.9)
        assert not timer.due(clock())
        clock.advance(0.1)
        assert timer.due(clock())
        assert not timer.due(clock())

    def test_claim_sizer_follows_the_rate_within_its_bounds(self):
        sizer = ClaimSizer(workers=2, now=0.0)
        assert sizer.target == 2 and sizer.depth(2) == 1
        for k in range(1, 50):  # 10,000 tasks/s: 20 ms of work is 200 tasks
            sizer.observe(100, 2, k * 0.01)
        assert 2 < sizer.target <= control.BACKLOG_MAX_PER_WORKER * 2
        assert sizer.depth(2) == -(-sizer.target // 2)
        slow = ClaimSizer(workers=2, now=0.0)
        slow.observe(1, 2, 10.0)  # long tasks: one per worker
        assert slow.target == 2


class TestStoreLoopJobs:
    def test_a_round_trip_carries_starts_and_outcomes_and_renews_the_lease(self, loop, clock):
        loop.handoff.put([7], [done(6)])
        clock.advance(3.0)  # past a quarter lease (2 s): but the round trip was a heartbeat
        assert loop.one_pass()
        assert loop.store.calls[0][:3] == ("exchange", [7], [6])
        assert "heartbeat" not in loop.store.names()
        assert loop.pilot.finished == 1

    def test_heartbeat_when_no_round_trip_renewed_the_lease(self, loop, clock):
        loop.more = False
        assert loop.one_pass()
        assert "heartbeat" not in loop.store.names()
        clock.advance(2.0)  # a quarter of the 8 s lease
        assert loop.one_pass()
        assert loop.store.names().count("heartbeat") == 1

    def test_sweep_every_sweep_period_whatever_the_lease(self, loop, clock):
        loop.more = False
        for _ in range(5):
            clock.advance(control.SWEEP_S / 2)
            loop.one_pass()
        assert loop.store.names().count("sweep") == 2

    def test_fenced_launcher_stops_and_claims_nothing_more(self, loop):
        loop.store.fail_with = LauncherFenced("lease expired")
        loop.handoff.put([1], [])
        assert loop.one_pass() is False
        assert loop.pilot.fenced
        assert loop.pilot.stop_reason == "lease expired (fenced)"

    def test_an_outage_keeps_the_outcomes_and_backs_off(self, loop):
        loop.store.fail_with = StoreUnavailable("down")
        loop.handoff.put([3], [done(3)])
        assert loop.one_pass() and loop.one_pass()
        assert loop.sleeps == [control.RETRY_MIN, control.RETRY_MIN * 2]
        assert loop.handoff.take() == ([3], [done(3)])

    def test_a_long_outage_is_retried_at_least_once_a_heartbeat_period(self, loop):
        # Peers that got through count this launcher's lease from then: a back-off longer
        # than its lease would get it fenced after an outage it rode out.
        loop.store.fail_with = StoreUnavailable("down")
        for _ in range(12):
            loop.one_pass()
        assert max(loop.sleeps) == loop.pilot.lease / control.BEATS_PER_LEASE  # 8 s / 4
        assert loop.pilot.lease / control.BEATS_PER_LEASE < control.RETRY_MAX

    def test_after_an_outage_its_lease_is_judged_from_its_first_failed_attempt(self, loop,
                                                                               clock):
        loop.store.clock = FakeClock(500.0)
        loop.store.fail_with = StoreUnavailable("down")
        loop.handoff.put([3], [])
        loop.one_pass()
        loop.store.clock.advance(10.0)  # the outage lasts longer than the 8 s lease
        loop.one_pass()
        loop.store.fail_with = None
        loop.store.clock.advance(10.0)
        loop.one_pass()
        assert loop.store.calls[-1][0] == "exchange" and loop.store.calls[-1][4] == 500.0
        assert loop.reachable_since == 520.0 and loop.failing_since is None
        loop.handoff.put([4], [])
        loop.more = False
        loop.one_pass()
        clock.advance(2 * control.START_RECORD_DELAY_S)
        loop.one_pass()
        assert loop.store.calls[-1][4] is None  # reachable again: judged now

    def test_a_start_alone_waits_briefly_for_its_outcome(self, loop, clock):
        loop.more = False
        loop.handoff.put([5], [])
        loop.one_pass()
        assert "exchange" not in loop.store.names()  # held: the outcome may come soon
        loop.handoff.put([], [done(5)])
        loop.one_pass()
        assert loop.store.calls[-1][:3] == ("exchange", [5], [5])  # one transaction
        loop.handoff.put([6], [])
        loop.one_pass()
        clock.advance(2 * control.START_RECORD_DELAY_S)
        loop.one_pass()  # a long run: its start is written on its own, not much later
        assert loop.store.calls[-1][:3] == ("exchange", [6], [])

    def test_the_start_of_a_run_not_known_to_be_short_is_written_at_once(self, loop, clock):
        loop.more = False
        loop.handoff.put([5], [], urgent=True)
        loop.one_pass()
        assert loop.store.calls[-1][:3] == ("exchange", [5], [])  # not held back
        loop.handoff.put([6], [])  # a short run's start waits again
        loop.one_pass()
        assert loop.store.calls[-1][:3] == ("exchange", [5], [])
        loop.handoff.put([7], [], urgent=True)  # urgency is not lost while starts wait
        loop.one_pass()
        assert loop.store.calls[-1][:3] == ("exchange", [6, 7], [])

    def test_a_refused_outcome_fails_only_its_own_task(self, loop):
        loop.store.reject = {5}
        loop.handoff.put([], [done(4), done(5), done(6)])
        assert loop.one_pass()
        alone = [c for c in loop.store.calls[1:] if c[0] == "exchange" and c[2]]
        assert [c[2] for c in alone] == [[4], [5], [5], [6]]  # 5 again, as a failure
        assert loop.pilot.finished == 3

    def test_kill_requests_reach_the_dispatcher(self, loop, clock):
        loop.store.kills = [9]
        loop.handoff.running = 1
        clock.advance(control.KILL_POLL)
        loop.more = False
        loop.one_pass()
        assert loop.handoff.take_kills() == {9}

    def test_idle_timeout_stops_the_launcher(self, loop, clock):
        loop.more = False
        loop.handoff.idle = True
        loop.one_pass()
        assert loop.pilot.stop_reason is None
        clock.advance(5.0)
        loop.one_pass()
        assert loop.pilot.stop_reason == "idle for 5 s"

    def test_outcomes_claim_nothing_after_a_claim_found_nothing_more(self, loop, clock):
        loop.handoff.put([], [done(1)])
        loop.one_pass()
        assert loop.store.calls[-1][3] == 2  # asked for 2, the store had none
        loop.handoff.put([], [done(2)])
        loop.one_pass()
        assert loop.store.calls[-1][2:4] == ([2], 0)  # the outcome alone
        loop.store.news = True  # another process committed something
        loop.handoff.put([], [done(3)])
        loop.one_pass()
        assert loop.store.calls[-1][2:4] == ([3], 2)
        loop.handoff.put([], [done(4)])
        loop.one_pass()
        assert loop.store.calls[-1][2:4] == ([4], 0)
        clock.advance(control.EXHAUSTED_TRUST_S)  # believed for so long only
        loop.handoff.put([], [done(5)])
        loop.one_pass()
        assert loop.store.calls[-1][2:4] == ([5], 2)

    def test_a_round_trip_that_made_tasks_claimable_claims_again(self, loop):
        loop.handoff.put([], [done(1)])
        loop.store.released = True  # say a retry of task 1: READY again, by this round trip
        loop.one_pass()
        loop.store.claimable = [claimed(1)]
        loop.handoff.put([], [done(2)])
        loop.one_pass()
        assert loop.store.calls[-1][2:4] == ([2], 2)
        assert [t.id for t in loop.placer.backlog] == [1]

    def test_a_claim_that_turned_tasks_away_claims_again_when_runs_end(self, loop):
        def turn_away():
            loop.placer.turned_away = True  # fit: a candidate did not fit the room left
        loop.store.on_exchange = turn_away
        loop.handoff.put([], [done(1)])
        loop.one_pass()
        loop.store.on_exchange = lambda: None
        loop.handoff.put([], [done(2)])
        loop.one_pass()
        assert loop.store.calls[-1][2:4] == ([2], 2)  # it may fit now

    def test_claims_only_the_room_left(self, loop):
        loop.store.claimable = [claimed(i) for i in range(1, 10)]
        loop.handoff.running = 1
        loop.one_pass()
        assert loop.store.calls[0][3] == 1  # target 2 workers, 1 running
        assert [t.id for t in loop.placer.backlog] == [1]


class TestPlacer:
    def test_a_row_that_cannot_run_is_taken_to_fail_alone(self):
        cfg = LauncherConfig(num_workers=2)
        placer = Placer([NodeSpec("localhost", 2, ())], cfg, head_nodes={0},
                        mpi_launcher="mpich")
        placer.claim_want = 10

        class Row:
            def __init__(self, task_id, ranks):
                self.id, self.num_nodes, self.ranks_per_node = task_id, 1, ranks
                self.threads_per_rank, self.gpus_per_rank = 1, 0
                self.node_packing_count, self.wall_time_s = 0, None

        assert placer.fit([Row(1, 1), Row(2, 0), Row(3, 1)]) == [0, 2, 1]
        bad = ClaimedTask(2, "t", "python", b"", {}, {}, 1, 0, 1, 0, 0, None, 0, 0, True, None)
        placer.add_claimed([bad])

        class NoRoom:
            has_gpus = False

            def capacity(self):
                return 0

        started, failed = placer.place_backlog(NoRoom(), None, launcher_id=1)
        assert started == [2] and not placer.backlog
        assert failed[0].path == (S.RUN_ERROR, S.FAILED)
        assert "ranks_per_node" in failed[0].message


class HoldingPool:
    """A stand-in for the warm workers: holds starts, knows the short runs it is told of,
    and records what it was sent."""

    has_gpus = False
    holds_starts = True

    def __init__(self, workers: int, short: set[int] = frozenset()) -> None:
        self.free, self.short_ids, self.sent = workers, set(short), []

    def capacity(self) -> int:
        return self.free

    def short(self, task: ClaimedTask) -> bool:
        return task.id in self.short_ids

    brief = short

    def dispatch(self, task: ClaimedTask, extra, pin) -> bool:
        if not self.free:
            return False
        self.free -= 1
        self.sent.append(task.id)
        return True


class TestHeldStarts:
    """A run not known to be short reaches its worker only once its start is recorded."""

    @pytest.fixture
    def placer(self):
        return Placer([NodeSpec("localhost", 2, ())], LauncherConfig(num_workers=2),
                      head_nodes={0}, mpi_launcher="mpich")

    def test_held_until_recorded_then_sent(self, placer):
        pool = HoldingPool(2, short={2})
        placer.add_claimed([claimed(1), claimed(2)])
        started, _ = placer.place_backlog(pool, None, launcher_id=1)
        assert started == [2] and placer.held_now == [1] and pool.sent == [2]
        handoff = Handoff()
        handoff.put(started, awaiting=placer.held_now)
        assert handoff.take() == ([2, 1], []) and handoff.urgent
        assert not handoff.has_recorded()
        assert handoff.recorded([2, 1], lost=[]) == []
        assert handoff.take_recorded() == ([1], [])
        placer.start_recorded(pool, [1], [])
        assert pool.sent == [2, 1] and placer.held() == 0

    def test_a_held_run_whose_task_was_cancelled_never_runs(self, placer):
        pool = HoldingPool(2)
        placer.add_claimed([claimed(1), claimed(2)])
        placer.place_backlog(pool, None, launcher_id=1)
        assert placer.held() == 2 and not pool.sent
        # A held run takes its place in the count of room: nothing more is placed.
        placer.add_claimed([claimed(3)])
        placer.place_backlog(pool, None, launcher_id=1)
        assert [t.id for t in placer.backlog] == [3]
        handoff = Handoff()
        handoff.put(awaiting=[1, 2])
        # Task 1 was cancelled before its start was written: dropped, not killed.
        assert handoff.recorded([1, 2], lost=[1]) == []
        go, drop = handoff.take_recorded()
        assert (go, drop) == ([2], [1])
        placer.start_recorded(pool, go, drop)
        assert pool.sent == [2] and placer.held() == 0
        placer.place_backlog(pool, None, launcher_id=1)  # task 1's core is free again
        assert placer.held_now == [3]

    def test_a_run_already_going_whose_start_was_refused_is_killed(self):
        handoff = Handoff()
        assert handoff.recorded([5, 6], lost=[6]) == [6]

    def test_a_held_run_killed_before_its_start_is_recorded(self, placer):
        pool = HoldingPool(2)
        placer.add_claimed([claimed(1)])
        placer.place_backlog(pool, None, launcher_id=1)
        assert [t.id for t in placer.take_doomed({1})] == [1]
        placer.start_recorded(pool, [1], [])  # its start recorded meanwhile: passed over
        assert not pool.sent and placer.held() == 0

    def test_a_recorded_run_waits_for_a_free_worker(self, placer):
        pool = HoldingPool(1)
        placer.add_claimed([claimed(1)])
        placer.place_backlog(pool, None, launcher_id=1)
        pool.free = 0  # its worker is being replaced
        placer.start_recorded(pool, [1], [])
        assert placer.has_cleared() and not pool.sent
        pool.free = 1
        placer.start_recorded(pool)
        assert pool.sent == [1] and not placer.has_cleared()

    def test_a_stopping_launcher_does_not_write_held_starts(self, loop):
        loop.handoff.put([7], awaiting=[8])
        loop.pilot.request_stop("test")
        loop.one_pass()
        assert loop.store.calls[0][:3] == ("exchange", [7], [])
        assert loop.handoff.take_recorded() == ([], [])

    def test_the_store_thread_writes_held_starts_at_once_and_answers(self, loop):
        loop.store.lose = {4}
        loop.handoff.put(awaiting=[3, 4])
        loop.one_pass()
        assert loop.store.calls[0][:3] == ("exchange", [3, 4], [])
        assert loop.handoff.take_recorded() == ([3], [4])
        assert not loop.handoff.take_kills()


def square(x):
    return x * x


def _python_path() -> str:
    """This test's import path, for workers (they import ``square`` from this module)."""
    return os.pathsep.join(p for p in sys.path if p)


class TestWorkerPoolAndPilot:
    def test_worker_pool_runs_a_task_and_reports_its_outcome(self):
        pool = WorkerPool(1, launcher_id=1, env={**os.environ, "PYTHONPATH": _python_path()})
        pool.start()
        try:
            payload = dump_call(dump_callable(square), (7,), {})
            task = ClaimedTask(1, "square", "python", payload, {}, {}, 1, 1, 1, 0, 0, None, 0,
                               0, True, None)
            assert pool.dispatch(task, {}, None)
            outcomes: list[TaskOutcome] = []
            deadline = time.monotonic() + 30
            while not outcomes and time.monotonic() < deadline:
                outcomes += pool.collect(1.0)[0]
            assert [o.path for o in outcomes] == [(S.RUN_DONE, S.JOB_FINISHED)]
            assert load_result(outcomes[0].result) == 49
        finally:
            pool.stop()

    def test_pilot_in_this_process_runs_the_store_tasks_and_gives_back_none(self, tmp_path):
        store = open_store(f"sqlite:///{tmp_path}/balsam.db")
        payload = dump_call(dump_callable(square), (3,), {})
        ids = store.create_tasks([TaskSpec("python", payload, TaskOptions(), name="square")
                                  for _ in range(5)])
        cfg = LauncherConfig(num_workers=2, idle_timeout=0.5,
                             worker_env={"PYTHONPATH": _python_path()})
        pilot = Pilot(f"sqlite:///{tmp_path}/balsam.db", cfg, store=store)
        thread = threading.Thread(target=pilot.run)  # the dispatcher needs no main thread
        thread.start()
        thread.join(30)
        assert not thread.is_alive()
        assert pilot.finished == 5
        assert pilot.stop_reason == "idle for 0.5 s"
        for event in store.task_outcomes(ids):
            assert event.state is S.JOB_FINISHED and pickle.loads(event.result) == 9
        states = [h["to_state"] for h in store.history(ids[0])]
        assert states == ["CLAIMED", "RUNNING", "RUN_DONE", "JOB_FINISHED"]
        assert store.list_launchers()[0]["state"] == "STOPPED"
        store.close()


def test_handoff_gives_back_in_order():
    handoff = Handoff()
    handoff.put([1], [done(1)])
    started, outcomes = handoff.take()
    handoff.put([2], [done(2)])
    handoff.give_back(started, outcomes)
    assert handoff.take() == ([1, 2], [done(1), done(2)])
    assert handoff.pending_outcomes() == 0
