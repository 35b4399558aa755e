"""Leases, fencing and the start of a run (CLAIMED -> RUNNING), on every backend.

Every launcher has its own lease, stored with it; it is alive while it is RUNNING and its last
heartbeat is within that lease.  ``requeue_expired()`` gives back what launchers that are not
alive hold (CLAIMED to READY, RUNNING to RESTART_READY); a launcher that finds itself not alive
on its next round trip gives back what it holds and gets ``LauncherFenced``.  Time is a fake
clock (``store.clock``), so no test sleeps.
"""

from __future__ import annotations

import os

import pytest
from clocks import FakeClock
from sqlalchemy import update

from balsam_futures import config
from balsam_futures.backends import LauncherInfo, SqlStore, TaskOutcome
from balsam_futures.backends.base import Exchange
from balsam_futures.backends.schema import tasks
from balsam_futures.errors import LauncherFenced
from balsam_futures.query import TaskQuery
from balsam_futures.tasks import (
    LauncherState,
    TaskOptions,
    TaskSpec,
    TaskState,
    check_transition,
    outcome_path,
)

pytestmark = pytest.mark.timeout(60)

S = TaskState
L = LauncherState



@pytest.fixture
def clock(store) -> FakeClock:
    store.clock = fake = FakeClock()
    return fake


def add(store: SqlStore, n: int = 1, **options) -> list[int]:
    return store.create_tasks([
        TaskSpec(kind="python", payload=b"p", options=TaskOptions(**options), name=f"t{i}")
        for i in range(n)])


def launcher(store: SqlStore, name: str = "host", lease_s: float | None = 30) -> int:
    return store.register_launcher(LauncherInfo(hostname=name, pid=os.getpid(),
                                                lease_s=lease_s))


def claim_ids(store: SqlStore, lid: int, limit: int) -> list[int]:
    return [c.id for c in store.claim(lid, limit)]


def done(task_id: int, result: bytes = b"r") -> TaskOutcome:
    return TaskOutcome(task_id, outcome_path(S.RUN_DONE, 0, 0, True), result=result)


def row_of(store: SqlStore, task_id: int) -> dict:
    (row,) = store.get_tasks([task_id])
    return row


def held(store: SqlStore, task_id: int) -> tuple[str, int | None]:
    row = row_of(store, task_id)
    return row["state"], row["launcher_id"]


def transitions(store: SqlStore, task_id: int) -> list[tuple[str, str]]:
    return [(h["from_state"], h["to_state"]) for h in store.history(task_id)]


def launcher_state(store: SqlStore, lid: int) -> str:
    (row,) = [r for r in store.list_launchers() if r["id"] == lid]
    return row["state"]


def assert_history_chained(store: SqlStore, task_id: int) -> None:
    previous = S.READY.value
    for frm, to in transitions(store, task_id):
        assert frm == previous, (task_id, transitions(store, task_id))
        check_transition(S(frm), S(to))
        previous = to


def assert_given_back(store: SqlStore, task_id: int, was: S, now: S, at: float) -> None:
    """``task_id`` left ``was`` for ``now`` under no launcher, with a lease history row."""
    assert held(store, task_id) == (now.value, None)
    last = store.history(task_id)[-1]
    assert (last["from_state"], last["to_state"]) == (was.value, now.value)
    assert "lease" in last["message"]
    assert last["at"] == at
    assert_history_chained(store, task_id)


# --------------------------------------------------------------------------------------------
# each launcher's own lease
# --------------------------------------------------------------------------------------------


class TestOwnLease:
    def test_each_launcher_is_judged_by_its_own_lease(self, store, clock):
        long_task, short_task = add(store, 2)
        long_lid, short_lid = launcher(store, "long", 600), launcher(store, "short", 6)
        assert claim_ids(store, long_lid, 1) == [long_task]
        assert claim_ids(store, short_lid, 1) == [short_task]
        clock.advance(60)
        assert store.requeue_expired() == [short_task]
        assert launcher_state(store, short_lid) == L.EXPIRED.value
        assert launcher_state(store, long_lid) == L.RUNNING.value
        assert held(store, long_task) == (S.CLAIMED.value, long_lid)
        assert_given_back(store, short_task, S.CLAIMED, S.READY, clock.now)
        store.heartbeat(long_lid)  # alive: no LauncherFenced
        # The long lease runs out too, counted from its last heartbeat.
        clock.advance(599)
        assert store.requeue_expired() == []
        clock.advance(2)
        assert store.requeue_expired() == [long_task]
        assert launcher_state(store, long_lid) == L.EXPIRED.value

    def test_a_launcher_is_alive_up_to_the_end_of_its_lease(self, store, clock):
        (tid,) = add(store)
        lid = launcher(store, lease_s=6)
        store.claim(lid, 1)
        clock.advance(6)  # heartbeat + lease == now: still alive
        assert store.requeue_expired() == []
        assert held(store, tid) == (S.CLAIMED.value, lid)
        clock.advance(0.5)
        assert store.requeue_expired() == [tid]

    def test_default_lease_is_the_setting_at_registration(self, store, clock, monkeypatch):
        variable = config.env_name("LEASE_SECONDS")
        monkeypatch.delenv(variable, raising=False)
        default = launcher(store, "default", lease_s=None)  # 30 s
        monkeypatch.setenv(variable, "300")
        from_env = launcher(store, "env", lease_s=None)  # 300 s, stored with it
        monkeypatch.setenv(variable, "1")  # later changes do not touch registered launchers
        a, b = add(store, 2)
        assert claim_ids(store, default, 1) == [a]
        assert claim_ids(store, from_env, 1) == [b]
        clock.advance(29)
        assert store.requeue_expired() == []
        clock.advance(2)
        assert store.requeue_expired() == [a]
        clock.advance(250)  # 281 s of 300
        assert store.requeue_expired() == []
        assert held(store, b) == (S.CLAIMED.value, from_env)

    def test_heartbeat_and_exchange_renew_the_lease(self, store, clock):
        (tid,) = add(store)
        lid = launcher(store, lease_s=10)
        store.claim(lid, 1)
        clock.advance(8)
        store.heartbeat(lid)
        clock.advance(8)  # 16 s since the claim, 8 since the heartbeat
        assert store.requeue_expired() == []
        assert store.exchange(lid, [tid], [], 0) == Exchange([], [])
        clock.advance(8)
        assert store.requeue_expired() == []
        clock.advance(3)  # 11 s since the exchange
        assert store.requeue_expired() == [tid]
        assert_given_back(store, tid, S.RUNNING, S.RESTART_READY, clock.now)


# --------------------------------------------------------------------------------------------
# fencing
# --------------------------------------------------------------------------------------------


class TestFencing:
    def test_swept_launcher_is_fenced_and_its_outcomes_refused(self, make_store, store, clock):
        started, claimed, spare = add(store, 3)
        fenced = launcher(store, "fenced", lease_s=10)
        assert claim_ids(store, fenced, 2) == [started, claimed]
        store.exchange(fenced, [started], [], 0)
        clock.advance(11)
        sweeper = make_store()  # someone else, on another connection
        sweeper.clock = clock
        assert sorted(sweeper.requeue_expired()) == [started, claimed]
        assert launcher_state(store, fenced) == L.EXPIRED.value
        assert_given_back(store, started, S.RUNNING, S.RESTART_READY, clock.now)
        assert_given_back(store, claimed, S.CLAIMED, S.READY, clock.now)
        history = {t: store.history(t) for t in (started, claimed, spare)}
        counts = {"RESTART_READY": 1, "READY": 2}
        assert store.count_by_state() == counts

        clock.advance(1)  # the fenced launcher wakes up
        with pytest.raises(LauncherFenced):
            store.exchange(fenced, [claimed], [done(started), done(claimed)], 10)
        with pytest.raises(LauncherFenced):
            store.record_and_claim(fenced, [done(started)], 10)
        with pytest.raises(LauncherFenced):
            store.claim(fenced, 10)
        with pytest.raises(LauncherFenced):
            store.heartbeat(fenced)
        assert store.record_outcomes(fenced, [done(started)]) == 0
        # It claimed nothing, wrote nothing, and stays fenced.
        assert store.count_by_state() == counts
        assert {t: store.history(t) for t in history} == history
        assert all(row_of(store, t)["result"] is None for t in history)
        assert all(row_of(store, t)["launcher_id"] is None for t in history)
        assert launcher_state(store, fenced) == L.EXPIRED.value
        # The work goes to a live launcher.
        live = launcher(store, "live")
        assert sorted(claim_ids(store, live, 10)) == [started, claimed, spare]

    @pytest.mark.parametrize("round_trip", ["exchange", "record_and_claim", "heartbeat"])
    def test_unswept_expired_launcher_fences_itself(self, store, clock, round_trip):
        started, claimed, spare = add(store, 3)
        lid = launcher(store, lease_s=10)
        assert claim_ids(store, lid, 2) == [started, claimed]
        store.exchange(lid, [started], [], 0)
        clock.advance(11)  # nobody swept
        assert held(store, started) == (S.RUNNING.value, lid)
        with pytest.raises(LauncherFenced):
            if round_trip == "exchange":
                store.exchange(lid, [claimed], [done(started)], 10)
            elif round_trip == "record_and_claim":
                store.record_and_claim(lid, [done(started)], 10)
            else:
                store.heartbeat(lid)
        # It gave back what it held (the outcome and the start were not written first).
        assert_given_back(store, started, S.RUNNING, S.RESTART_READY, clock.now)
        assert_given_back(store, claimed, S.CLAIMED, S.READY, clock.now)
        assert row_of(store, started)["result"] is None
        assert held(store, spare) == (S.READY.value, None)  # and claimed nothing
        assert transitions(store, spare) == []
        assert launcher_state(store, lid) == L.EXPIRED.value
        assert store.requeue_expired() == []  # nothing left to sweep

    @pytest.mark.parametrize("how", ["stopped", "expired"])
    def test_dead_launcher_still_holding_tasks_is_swept(self, store, clock, how):
        running, claimed, other = add(store, 3)
        lid = launcher(store, "dead", lease_s=600)
        live = launcher(store, "live", lease_s=600)
        assert claim_ids(store, lid, 2) == [running, claimed]
        assert claim_ids(store, live, 1) == [other]
        store.exchange(lid, [running], [], 0)
        if how == "stopped":
            assert sorted(store.stop_launcher(lid)) == [running, claimed]
            mark = L.STOPPED
        else:
            clock.advance(300)
            store.heartbeat(live)
            clock.advance(301)
            assert sorted(store.requeue_expired()) == [running, claimed]
            mark = L.EXPIRED
        assert launcher_state(store, lid) == mark.value
        # Its rows come back under it (a claim that raced the stop, say).
        with store.engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.id == running)
                         .values(state=S.RUNNING.value, launcher_id=lid))
            conn.execute(update(tasks).where(tasks.c.id == claimed)
                         .values(state=S.CLAIMED.value, launcher_id=lid))
        clock.advance(1)  # well within its lease: it is its state that makes it dead
        assert sorted(store.requeue_expired()) == [running, claimed]
        for tid, was, now in ((running, S.RUNNING, S.RESTART_READY),
                              (claimed, S.CLAIMED, S.READY)):
            assert held(store, tid) == (now.value, None)
            last = store.history(tid)[-1]
            assert (last["from_state"], last["to_state"]) == (was.value, now.value)
            assert last["message"]
            assert last["at"] == clock.now
        assert launcher_state(store, lid) != L.RUNNING.value
        assert held(store, other) == (S.CLAIMED.value, live)
        assert launcher_state(store, live) == L.RUNNING.value
        assert store.requeue_expired() == []


# --------------------------------------------------------------------------------------------
# the start of a run, and what a launcher no longer holds
# --------------------------------------------------------------------------------------------


class TestStart:
    def test_exchange_marks_started_tasks_running_with_history(self, store, clock):
        a, b, c = add(store, 3)
        lid = launcher(store)
        assert claim_ids(store, lid, 3) == [a, b, c]
        _, cursor = store.read_events(0)
        clock.advance(1)
        assert store.exchange(lid, [a, b], [], 0) == Exchange([], [])
        for tid in (a, b):
            assert held(store, tid) == (S.RUNNING.value, lid)
            assert transitions(store, tid) == [("READY", "CLAIMED"), ("CLAIMED", "RUNNING")]
            assert store.history(tid)[-1]["at"] == clock.now
        assert held(store, c) == (S.CLAIMED.value, lid)
        assert transitions(store, c) == [("READY", "CLAIMED")]
        events, _ = store.read_events(cursor)
        assert [(e.task_id, e.state) for e in events] == [(a, S.RUNNING), (b, S.RUNNING)]
        assert store.count_by_state() == {"RUNNING": 2, "CLAIMED": 1}

    def test_exchange_starts_records_and_claims_in_one_call(self, store, clock):
        a, b = add(store, 2)
        lid = launcher(store)
        assert claim_ids(store, lid, 2) == [a, b]
        (c,) = add(store)
        # b started and ended between two round trips: the launcher reports both.
        ex = store.exchange(lid, [a, b], [done(b, b"rb")], 5)
        assert [t.id for t in ex.claimed] == [c]
        assert ex.lost == []
        assert held(store, a) == (S.RUNNING.value, lid)
        assert (row_of(store, b)["state"], row_of(store, b)["result"]) == ("JOB_FINISHED", b"rb")
        assert transitions(store, b) == [
            ("READY", "CLAIMED"), ("CLAIMED", "RUNNING"), ("RUNNING", "RUN_DONE"),
            ("RUN_DONE", "JOB_FINISHED")]
        assert held(store, c) == (S.CLAIMED.value, lid)

    def test_exchange_outcome_of_a_task_not_reported_started_keeps_the_chain(self, store,
                                                                            clock):
        # An outcome whose start the launcher did not list: the store must either record the
        # start first (as record_outcomes does) or refuse the outcome; either way every state
        # change keeps its one history row and the chain stays unbroken.
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        store.exchange(lid, [], [done(tid)], 0)
        assert_history_chained(store, tid)
        row = row_of(store, tid)
        if row["state"] == "JOB_FINISHED":
            assert transitions(store, tid) == [
                ("READY", "CLAIMED"), ("CLAIMED", "RUNNING"), ("RUNNING", "RUN_DONE"),
                ("RUN_DONE", "JOB_FINISHED")]
        else:
            assert (row["state"], row["result"]) == ("CLAIMED", None)
            assert transitions(store, tid) == [("READY", "CLAIMED")]

    def test_duplicate_started_ids_write_one_history_row(self, store, clock):
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        assert store.exchange(lid, [tid, tid], [], 0).lost == []
        assert transitions(store, tid) == [("READY", "CLAIMED"), ("CLAIMED", "RUNNING")]

    def test_started_task_cancelled_meanwhile_is_lost(self, store, clock):
        a, b = add(store, 2)
        lid = launcher(store)
        assert claim_ids(store, lid, 2) == [a, b]
        assert store.cancel([a]) == [a]  # CLAIMED: not started yet, so cancellable
        ex = store.exchange(lid, [a, b], [], 0)
        assert ex.lost == [a]
        assert row_of(store, a)["state"] == "CANCELLED"
        assert transitions(store, a) == [("READY", "CLAIMED"), ("CLAIMED", "CANCELLED")]
        assert held(store, b) == (S.RUNNING.value, lid)
        assert store.cancel([b]) == []  # RUNNING: no longer cancellable
        assert held(store, b) == (S.RUNNING.value, lid)

    @pytest.mark.parametrize("call", ["record_outcomes", "exchange", "record_and_claim"])
    def test_outcome_of_a_cancelled_claimed_task_is_refused(self, store, clock, call):
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        assert store.cancel([tid]) == [tid]
        history = store.history(tid)
        if call == "record_outcomes":
            assert store.record_outcomes(lid, [done(tid)]) == 0
        elif call == "exchange":
            # The run ended: nothing to stop, so it is not reported lost either.
            assert store.exchange(lid, [tid], [done(tid)], 0) == Exchange([], [])
        else:
            assert store.record_and_claim(lid, [done(tid)], 5) == []
        row = row_of(store, tid)
        assert (row["state"], row["result"]) == ("CANCELLED", None)
        assert store.history(tid) == history

    def test_handed_back_task_started_again_while_running_is_not_lost(self, store, clock):
        (tid,) = add(store, max_retries=1)
        lid = launcher(store)
        store.claim(lid, 1)
        assert store.exchange(lid, [tid], [], 0).lost == []
        store.record_outcomes(lid, [TaskOutcome(tid, outcome_path(S.RUN_ERROR, 0, 1, True))])
        assert row_of(store, tid)["state"] == "RESTART_READY"  # handed back for a retry
        assert claim_ids(store, lid, 1) == [tid]
        assert store.exchange(lid, [tid], [], 0).lost == []
        history = store.history(tid)
        # Reported as started again (a resent round trip) while it runs: not lost, no row.
        assert store.exchange(lid, [tid], [], 0).lost == []
        assert held(store, tid) == (S.RUNNING.value, lid)
        assert store.history(tid) == history
        assert [to for _, to in transitions(store, tid)] == [
            "CLAIMED", "RUNNING", "RUN_ERROR", "RESTART_READY", "CLAIMED", "RUNNING"]
        assert_history_chained(store, tid)

    def test_started_task_now_running_under_another_launcher_is_lost(self, store, clock):
        (tid,) = add(store)
        first, second = launcher(store, "first"), launcher(store, "second")
        store.claim(first, 1)
        assert store.exchange(first, [tid], [], 0).lost == []
        # Handed back behind its launcher's back (the query API refuses to move a task a
        # launcher holds, so it is done in SQL), then claimed and started elsewhere.
        assert TaskQuery(store).filter(id=tid).update(state="RESTART_READY") == 0
        with store.engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.id == tid).values(
                state=S.RESTART_READY.value, launcher_id=None))
        assert claim_ids(store, second, 1) == [tid]
        assert store.exchange(second, [tid], [], 0).lost == []
        ex = store.exchange(first, [tid], [], 0)
        assert ex.lost == [tid]
        assert store.record_outcomes(first, [done(tid, b"stale")]) == 0
        assert held(store, tid) == (S.RUNNING.value, second)
        assert row_of(store, tid)["result"] is None


class TestOutages:
    """An outage (or a blocked store) is nobody's silence: leases are not held against it."""

    def test_a_launcher_that_rode_out_an_outage_renews(self, store, clock):
        (tid,) = add(store)
        lid = launcher(store, lease_s=6)
        assert claim_ids(store, lid, 1) == [tid]
        first_failure = clock.now + 1
        clock.advance(20)  # it kept trying since first_failure; the store was down
        store.exchange(lid, [tid], [], 0, asked=first_failure)
        assert held(store, tid) == (S.RUNNING.value, lid)
        assert launcher_state(store, lid) == L.RUNNING.value

    def test_a_launcher_silent_by_its_own_fault_is_fenced(self, store, clock):
        (tid,) = add(store)
        lid = launcher(store, lease_s=6)
        claim_ids(store, lid, 1)
        clock.advance(20)  # paused: it did not even try
        with pytest.raises(LauncherFenced):
            store.exchange(lid, [tid], [], 0)
        assert held(store, tid) == (S.READY.value, None)

    def test_a_sweeper_back_from_an_outage_gives_the_others_a_lease(self, store, clock):
        (tid,) = add(store)
        other = launcher(store, "other", lease_s=6)
        claim_ids(store, other, 1)
        clock.advance(20)  # the store was unreachable for everyone; the sweeper is back
        assert store.requeue_expired(unreachable_until=clock.now) == []
        assert held(store, tid) == (S.CLAIMED.value, other)
        clock.advance(7)  # a whole lease later, still silent: now it is judged dead
        assert store.requeue_expired(unreachable_until=clock.now - 7) == [tid]
        assert launcher_state(store, other) == L.EXPIRED.value
