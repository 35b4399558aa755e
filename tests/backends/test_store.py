"""Behaviour suite for the task store (``balsam_futures.backends``), run on every backend.

The store is the single source of truth, so these tests pin down what each of its four stages
promises: ``create_tasks`` (ids), ``claim`` (atomic, ordered, filtered), ``record_outcomes``
(guarded by the launcher holding the task, one history row per state change) and
``read_events`` (watched states after a cursor), plus cancellation, leases and the change
probe.  Every test takes the ``store`` or ``make_store`` fixture from ``conftest.py``, so a new
backend runs the whole suite by adding one factory there.

Schema checks on files that are not balsam stores are SQLite-specific and live in
``TestSqliteFiles`` at the end.
"""

from __future__ import annotations

import os
import select
import sqlite3
import stat
import threading

import pytest
from clocks import FakeClock
from sqlalchemy import text, update

from balsam_futures.backends import ClaimOffer, LauncherInfo, SqlStore, TaskOutcome, open_store
from balsam_futures.backends import statements as q
from balsam_futures.backends.migrations import SCHEMA_VERSION
from balsam_futures.backends.schema import meta
from balsam_futures.errors import SchemaMismatch
from balsam_futures.tasks import (
    WATCHED,
    LauncherState,
    Resources,
    TaskOptions,
    TaskSpec,
    TaskState,
    check_transition,
    outcome_path,
)

pytestmark = pytest.mark.timeout(60)

S = TaskState


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'balsam.db'}"


def spec(name: str = "t", **options) -> TaskSpec:
    return TaskSpec(kind="python", payload=b"payload-" + name.encode(),
                    options=TaskOptions(**options), name=name)


def add(store: SqlStore, n: int = 1, **options) -> list[int]:
    return store.create_tasks([spec(f"t{i}", **options) for i in range(n)])


def launcher(store: SqlStore, name: str = "host", lease_s: float | None = None) -> int:
    return store.register_launcher(LauncherInfo(hostname=name, pid=os.getpid(),
                                                lease_s=lease_s))


def start(store: SqlStore, lid: int, ids: list[int]) -> None:
    """Report that runs of claimed tasks ``ids`` started (CLAIMED -> RUNNING)."""
    assert store.exchange(lid, ids, [], 0).lost == []



def launcher_state(store: SqlStore, lid: int) -> str:
    (row,) = [r for r in store.list_launchers() if r["id"] == lid]
    return row["state"]


def state_of(store: SqlStore, task_id: int) -> TaskState:
    (row,) = store.get_tasks([task_id])
    return TaskState(row["state"])


def row_of(store: SqlStore, task_id: int) -> dict:
    (row,) = store.get_tasks([task_id])
    return row


def transitions(store: SqlStore, task_id: int) -> list[tuple[str | None, str]]:
    return [(h["from_state"], h["to_state"]) for h in store.history(task_id)]


def finish(store: SqlStore, lid: int, task_id: int, run_state: TaskState,
           num_restarts: int = 0, max_retries: int = 0, auto_timeout_retry: bool = True,
           **fields) -> TaskOutcome:
    outcome = TaskOutcome(task_id=task_id,
                          path=outcome_path(run_state, num_restarts, max_retries,
                                            auto_timeout_retry),
                          **fields)
    store.record_outcomes(lid, [outcome])
    return outcome


def assert_history_chained(store: SqlStore, task_id: int) -> None:
    """Each history row starts where the previous one ended, and every move is allowed."""
    previous = S.READY.value  # creation is recorded by created_at, not by a history row
    for frm, to in transitions(store, task_id):
        assert frm == previous, (task_id, transitions(store, task_id))
        check_transition(S(frm), S(to))
        previous = to


# --------------------------------------------------------------------------------------------
# create_tasks
# --------------------------------------------------------------------------------------------


class TestCreate:
    def test_empty_create_returns_no_ids(self, store):
        assert store.create_tasks([]) == []

    def test_ids_are_ordered_and_increasing(self, store):
        first = add(store, 3)
        second = add(store, 4)
        ids = first + second
        assert len(ids) == 7
        assert ids == sorted(ids)
        assert len(set(ids)) == 7
        rows = store.get_tasks(ids)
        assert [r["name"] for r in rows] == [f"t{i}" for i in range(3)] + [
            f"t{i}" for i in range(4)
        ]

    def test_bulk_of_ten_thousand_in_one_call(self, store):
        ids = add(store, 10_000)
        assert len(ids) == 10_000
        assert all(b > a for a, b in zip(ids, ids[1:]))
        assert store.count_by_state() == {"READY": 10_000}
        first, last = store.get_tasks([ids[0], ids[-1]])
        assert (first["name"], last["name"]) == ("t0", "t9999")

    def test_options_are_stored(self, store):
        (tid,) = store.create_tasks([spec("x", tags={"exp": "a"}, data={"k": [1, 2]},
                                          max_retries=3, timeout=12.5, priority=4,
                                          description="d")])
        row = row_of(store, tid)
        assert row["tags"] == {"exp": "a"}
        assert row["data"] == {"k": [1, 2]}
        assert (row["max_retries"], row["wall_time_s"], row["priority"]) == (3, 12.5, 4)
        assert row["description"] == "d"
        assert row["num_restarts"] == 0
        assert row["state"] == "READY"

    def test_ids_are_never_reused_after_delete(self, store):
        # The store has no delete method; the named statement in statements/ is how an
        # administrator would remove rows.
        ids = add(store, 5)
        with store.engine.begin() as conn:
            conn.execute(q.delete_tasks(ids[2:]))  # the newest ids, where reuse would show
        assert [r["id"] for r in store.get_tasks(ids)] == ids[:2]
        (new,) = add(store, 1)
        assert new > max(ids)


# --------------------------------------------------------------------------------------------
# claim
# --------------------------------------------------------------------------------------------


class TestClaim:
    def test_claim_moves_tasks_to_claimed_under_the_launcher(self, store):
        ids = add(store, 3, tags={"a": "b"}, max_retries=2, timeout=5.0)
        lid = launcher(store)
        claimed = store.claim(lid, 10)
        assert [c.id for c in claimed] == ids
        c = claimed[0]
        assert c.payload == b"payload-t0"
        assert c.tags == {"a": "b"}
        assert (c.max_retries, c.num_restarts, c.wall_time_s) == (2, 0, 5.0)
        assert c.auto_timeout_retry is True
        for tid in ids:
            row = row_of(store, tid)
            assert (row["state"], row["launcher_id"]) == ("CLAIMED", lid)
            (h,) = store.history(tid)
            assert (h["from_state"], h["to_state"], h["message"]) == (
                "READY", "CLAIMED", f"claimed by launcher {lid}")

    def test_limit_zero_returns_nothing_and_claims_nothing(self, store):
        add(store, 3)
        assert store.claim(launcher(store), 0) == []
        assert store.count_by_state() == {"READY": 3}

    def test_limit_is_respected(self, store):
        ids = add(store, 5)
        lid = launcher(store)
        assert [c.id for c in store.claim(lid, 2)] == ids[:2]
        assert [c.id for c in store.claim(lid, 2)] == ids[2:4]
        assert [c.id for c in store.claim(lid, 2)] == ids[4:]
        assert store.claim(lid, 2) == []

    def test_higher_priority_first_then_id_order(self, store):
        low = store.create_tasks([spec("low0", priority=-1), spec("low1", priority=-1)])
        mid = store.create_tasks([spec("mid0"), spec("mid1")])
        high = store.create_tasks([spec("high0", priority=5), spec("high1", priority=5)])
        top = store.create_tasks([spec("top", priority=9)])
        claimed = [c.id for c in store.claim(launcher(store), 100)]
        assert claimed == top + high + mid + low

    def test_tags_filter_only_returns_matching_tasks(self, store):
        a = store.create_tasks([spec("a", tags={"exp": "a", "site": "x"})])
        b = store.create_tasks([spec("b", tags={"exp": "b", "site": "x"})])
        untagged = store.create_tasks([spec("none")])
        lid = launcher(store)
        assert [c.id for c in store.claim(lid, 10, tags={"exp": "a", "site": "x"})] == a
        assert store.claim(lid, 10, tags={"exp": "a"}) == []
        assert store.claim(lid, 10, tags={"exp": "b", "site": "y"}) == []
        assert [c.id for c in store.claim(lid, 10, tags={"site": "x"})] == b
        assert [c.id for c in store.claim(lid, 10)] == untagged

    def test_a_tag_key_with_several_values_serves_any_of_them(self, store):
        a = store.create_tasks([spec("a", tags={"exp": "a"})])
        b = store.create_tasks([spec("b", tags={"exp": "b"})])
        store.create_tasks([spec("c", tags={"exp": "c"})])
        lid = launcher(store)
        claimed = store.claim(lid, 10, tags={"exp": ("a", "b")})
        assert sorted(c.id for c in claimed) == sorted(a + b)
        assert store.claim(lid, 10, tags={"exp": ("a", "b")}) == []

    def test_max_nodes_filter(self, store):
        big = store.create_tasks([spec("big", resources=Resources(num_nodes=8))])
        small = store.create_tasks([spec("small", resources=Resources(num_nodes=2))])
        one = store.create_tasks([spec("one")])
        lid = launcher(store)
        assert [c.id for c in store.claim(lid, 10, max_nodes=1)] == one
        claimed = store.claim(lid, 10, max_nodes=4)
        assert [c.id for c in claimed] == small
        assert claimed[0].num_nodes == 2
        assert [c.id for c in store.claim(lid, 10, max_nodes=8)] == big

    def test_running_and_finished_tasks_are_not_claimed(self, store):
        ids = add(store, 2)
        lid = launcher(store)
        store.claim(lid, 1)
        finish(store, lid, ids[0], S.RUN_DONE, result=b"r")
        assert [c.id for c in store.claim(lid, 10)] == ids[1:]
        assert store.claim(lid, 10) == []

    def test_concurrent_claims_never_return_a_task_twice(self, make_store):
        first, second = make_store(), make_store()
        n = 1500
        ids = first.create_tasks([spec(f"t{i}") for i in range(n)])
        stores = [first, second]
        lids = [launcher(first, f"h{i}") for i in range(6)]
        got: dict[int, list[int]] = {lid: [] for lid in lids}
        errors: list[BaseException] = []
        start = threading.Barrier(len(lids))

        def claimer(store: SqlStore, lid: int) -> None:
            try:
                start.wait()
                while True:
                    batch = store.claim(lid, 7)
                    if not batch:
                        return
                    got[lid].extend(c.id for c in batch)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=claimer, args=(stores[i % 2], lid))
                   for i, lid in enumerate(lids)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=50)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        union = [tid for lid in lids for tid in got[lid]]
        assert len(union) == len(set(union)), "a task was claimed twice"
        assert sorted(union) == ids
        assert sum(1 for lid in lids if got[lid]) >= 2, "claims did not overlap at all"
        # Each row is held by the launcher that got it, with exactly one claim in its history.
        holders = {r["id"]: r["launcher_id"] for r in second.get_tasks(ids)}
        for lid in lids:
            assert all(holders[tid] == lid for tid in got[lid])
        assert second.count_by_state() == {"CLAIMED": n}
        assert transitions(second, ids[0]) == [("READY", "CLAIMED")]


# --------------------------------------------------------------------------------------------
# record_outcomes
# --------------------------------------------------------------------------------------------


class TestResourceAwareClaim:
    """A ClaimOffer's fit runs inside the claim: what it rejects stays claimable, untouched."""

    @staticmethod
    def only_small(rows):
        return [i for i, r in enumerate(rows) if r.num_nodes == 1]

    def test_claims_only_what_fits_and_looks_past_the_rest(self, store):
        big = add(store, 3, resources=Resources(num_nodes=4))
        small = add(store, 3)
        lid = launcher(store)
        offer = ClaimOffer(fit=self.only_small, window=16)
        claimed = store.claim(lid, 2, offer=offer)
        assert [t.id for t in claimed] == small[:2]
        assert all(state_of(store, i) is TaskState.READY for i in big)
        # The rejected tasks gained no history: they were never claimed.
        assert all([h["to_state"] for h in store.history(i)] == [] for i in big)
        assert [t.id for t in store.claim(lid, 5, offer=offer)] == small[2:]

    def test_the_fit_sees_rows_claimed_earlier_in_the_same_claim(self, store):
        add(store, 2, resources=Resources(num_nodes=4))
        add(store, 4)
        seen = []

        def at_most_two(rows):  # room for two small tasks in all
            seen.append(len(rows))
            return [i for i, r in enumerate(rows) if r.num_nodes == 1][:2]

        claimed = store.claim(launcher(store), 4, offer=ClaimOffer(fit=at_most_two, window=16))
        assert len(claimed) == 2

    def test_wall_time_filter(self, store):
        long_ones = add(store, 2, timeout=3600)
        short = add(store, 1, timeout=60)
        none = add(store, 1)
        claimed = store.claim(launcher(store), 10, offer=ClaimOffer(max_wall_s=600))
        assert sorted(t.id for t in claimed) == sorted(short + none)
        assert all(state_of(store, i) is TaskState.READY for i in long_ones)


class TestRecordOutcomes:
    def test_success_stores_result_and_finishes(self, store):
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        finish(store, lid, tid, S.RUN_DONE, result=b"the result", return_code=0)
        row = row_of(store, tid)
        assert row["state"] == "JOB_FINISHED"
        assert row["result"] == b"the result"
        assert row["error"] is None
        assert row["return_code"] == 0
        assert transitions(store, tid) == [
            ("READY", "CLAIMED"), ("CLAIMED", "RUNNING"), ("RUNNING", "RUN_DONE"),
            ("RUN_DONE", "JOB_FINISHED"),
        ]

    def test_error_with_retries_left_is_restarted_and_claimable(self, store):
        (tid,) = add(store, max_retries=2)
        lid = launcher(store)
        (c,) = store.claim(lid, 1)
        finish(store, lid, tid, S.RUN_ERROR, c.num_restarts, c.max_retries, error=b"boom")
        row = row_of(store, tid)
        assert (row["state"], row["num_restarts"], row["error"]) == ("RESTART_READY", 1, b"boom")
        (again,) = store.claim(lid, 1)
        assert (again.id, again.num_restarts) == (tid, 1)
        finish(store, lid, tid, S.RUN_ERROR, again.num_restarts, again.max_retries)
        (third,) = store.claim(lid, 1)
        assert third.num_restarts == 2
        finish(store, lid, tid, S.RUN_ERROR, third.num_restarts, third.max_retries,
               error=b"final")
        row = row_of(store, tid)
        assert (row["state"], row["num_restarts"], row["error"]) == ("FAILED", 2, b"final")
        assert store.claim(lid, 1) == []
        assert_history_chained(store, tid)

    def test_error_without_retries_fails(self, store):
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        finish(store, lid, tid, S.RUN_ERROR, error=b"boom", message="exit 1")
        row = row_of(store, tid)
        assert (row["state"], row["num_restarts"], row["error"]) == ("FAILED", 0, b"boom")
        assert transitions(store, tid) == [
            ("READY", "CLAIMED"), ("CLAIMED", "RUNNING"), ("RUNNING", "RUN_ERROR"),
            ("RUN_ERROR", "FAILED"),
        ]
        assert store.history(tid)[2]["message"] == "exit 1"
        assert store.claim(lid, 1) == []

    def test_timeout_is_retried_automatically_once(self, store):
        (tid,) = add(store, timeout=1.0)
        lid = launcher(store)
        (c,) = store.claim(lid, 1)
        finish(store, lid, tid, S.RUN_TIMEOUT, c.num_restarts, c.max_retries,
               c.auto_timeout_retry)
        assert state_of(store, tid) is S.RESTART_READY
        (again,) = store.claim(lid, 1)
        assert again.num_restarts == 1
        finish(store, lid, tid, S.RUN_TIMEOUT, again.num_restarts, again.max_retries,
               again.auto_timeout_retry)
        assert state_of(store, tid) is S.FAILED
        assert [to for _, to in transitions(store, tid)] == [
            "CLAIMED", "RUNNING", "RUN_TIMEOUT", "RESTART_READY",
            "CLAIMED", "RUNNING", "RUN_TIMEOUT", "FAILED",
        ]
        assert_history_chained(store, tid)

    def test_outcome_from_a_launcher_not_holding_the_task_is_dropped(self, store):
        (tid,) = add(store)
        holder, other = launcher(store, "a"), launcher(store, "b")
        store.claim(holder, 1)
        before = row_of(store, tid)
        history_before = store.history(tid)
        finish(store, other, tid, S.RUN_DONE, result=b"forged")
        assert row_of(store, tid) == before
        assert store.history(tid) == history_before
        # The holder can still write its own outcome.
        finish(store, holder, tid, S.RUN_DONE, result=b"real")
        assert row_of(store, tid)["result"] == b"real"

    def test_dropped_outcome_does_not_disturb_the_rest_of_the_batch(self, store):
        ids = add(store, 3)
        a, b = launcher(store, "a"), launcher(store, "b")
        store.claim(a, 2)
        store.claim(b, 1)
        store.record_outcomes(a, [
            TaskOutcome(ids[0], outcome_path(S.RUN_DONE, 0, 0, True), result=b"0"),
            TaskOutcome(ids[2], outcome_path(S.RUN_DONE, 0, 0, True), result=b"2"),  # b's
            TaskOutcome(ids[1], outcome_path(S.RUN_ERROR, 0, 0, True), error=b"1"),
        ])
        # b's task is not even recorded as started: a's outcome does not touch it.
        assert [state_of(store, i) for i in ids] == [S.JOB_FINISHED, S.FAILED, S.CLAIMED]
        assert transitions(store, ids[2]) == [("READY", "CLAIMED")]
        assert len(store.history(ids[0])) == 4
        assert len(store.history(ids[1])) == 4

    def test_outcome_after_the_task_already_finished_writes_no_history(self, store):
        # A launcher that resends a batch (say its commit succeeded but the reply was lost)
        # must not add state changes that did not happen: the watcher would see a second
        # JOB_FINISHED event for the same run.
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        finish(store, lid, tid, S.RUN_DONE, result=b"r")
        history = store.history(tid)
        finish(store, lid, tid, S.RUN_DONE, result=b"again")
        assert row_of(store, tid)["result"] == b"r"
        assert store.history(tid) == history

    def test_same_outcome_twice_in_one_batch_writes_history_once(self, store):
        (tid,) = add(store)
        lid = launcher(store)
        store.claim(lid, 1)
        outcome = TaskOutcome(tid, outcome_path(S.RUN_DONE, 0, 0, True), result=b"r")
        store.record_outcomes(lid, [outcome, outcome])
        assert transitions(store, tid) == [
            ("READY", "CLAIMED"), ("CLAIMED", "RUNNING"), ("RUNNING", "RUN_DONE"),
            ("RUN_DONE", "JOB_FINISHED"),
        ]

    def test_every_state_change_has_exactly_one_history_row(self, store):
        ids = add(store, 4, max_retries=1)
        lid = launcher(store)
        store.claim(lid, 4)
        store.record_outcomes(lid, [
            TaskOutcome(ids[0], outcome_path(S.RUN_DONE, 0, 1, True), result=b"r"),
            TaskOutcome(ids[1], outcome_path(S.RUN_ERROR, 0, 1, True), error=b"e"),
            TaskOutcome(ids[2], outcome_path(S.KILLED, 0, 1, True)),
            TaskOutcome(ids[3], outcome_path(S.RUN_TIMEOUT, 0, 1, True)),
        ])
        expected = {
            ids[0]: ["CLAIMED", "RUNNING", "RUN_DONE", "JOB_FINISHED"],
            ids[1]: ["CLAIMED", "RUNNING", "RUN_ERROR", "RESTART_READY"],
            ids[2]: ["CLAIMED", "RUNNING", "KILLED"],
            ids[3]: ["CLAIMED", "RUNNING", "RUN_TIMEOUT", "RESTART_READY"],
        }
        for tid, states in expected.items():
            assert [to for _, to in transitions(store, tid)] == states
            assert_history_chained(store, tid)
            assert state_of(store, tid).value == states[-1]
        history_ids = [h["id"] for tid in ids for h in store.history(tid)]
        assert len(history_ids) == len(set(history_ids))

    def test_a_round_trip_says_whether_it_made_tasks_claimable(self, store):
        # The launcher skips claims while the store has nothing for it; its own writes that
        # make tasks claimable are not news to its change probe, so the round trip says so.
        plain, retried, parent = add(store, 3, max_retries=1)
        (child,) = store.create_tasks([TaskSpec("python", b"c", TaskOptions(), name="c",
                                                depends_on=(parent,))])
        lid = launcher(store)
        store.claim(lid, 3)

        def outcome(task_id: int, run_state: TaskState) -> TaskOutcome:
            return TaskOutcome(task_id, outcome_path(run_state, 0, 1, True), result=b"r")

        assert store.exchange(lid, [], [outcome(plain, S.RUN_DONE)], 0).released is False
        assert store.exchange(lid, [], [outcome(retried, S.RUN_ERROR)], 0).released is True
        assert state_of(store, retried) is S.RESTART_READY
        trip = store.exchange(lid, [], [outcome(parent, S.RUN_DONE)], 5)
        assert trip.released is True  # the child is READY now, and claimed with it
        assert state_of(store, child) is S.CLAIMED
        assert store.exchange(lid, [], [], 5).released is False

    def test_record_and_claim_in_one_call(self, store):
        ids = add(store, 3)
        lid = launcher(store)
        store.claim(lid, 1)
        claimed = store.record_and_claim(
            lid, [TaskOutcome(ids[0], outcome_path(S.RUN_DONE, 0, 0, True), result=b"r")], 5)
        assert [c.id for c in claimed] == ids[1:]
        assert state_of(store, ids[0]) is S.JOB_FINISHED


# --------------------------------------------------------------------------------------------
# read_events
# --------------------------------------------------------------------------------------------


def _drive_every_watched_state(store: SqlStore) -> dict[int, list[TaskState]]:
    """Tasks through each kind of run; returns the watched states each should report."""
    ids = add(store, 5, max_retries=1)
    lid = launcher(store)
    store.cancel([ids[4]])
    store.claim(lid, 4)
    store.record_outcomes(lid, [
        TaskOutcome(ids[0], outcome_path(S.RUN_DONE, 0, 1, True), result=b"ok"),
        TaskOutcome(ids[1], outcome_path(S.RUN_ERROR, 1, 1, True), error=b"err"),
        TaskOutcome(ids[2], outcome_path(S.KILLED, 0, 1, True)),
        TaskOutcome(ids[3], outcome_path(S.RUN_ERROR, 0, 1, True), error=b"retry"),
    ])
    return {
        ids[0]: [S.RUNNING, S.JOB_FINISHED],
        ids[1]: [S.RUNNING, S.FAILED],
        ids[2]: [S.RUNNING, S.KILLED],
        ids[3]: [S.RUNNING],  # RUN_ERROR and RESTART_READY are not watched
        ids[4]: [S.CANCELLED],
    }


class TestEvents:
    def test_empty_store_has_no_events(self, store):
        assert store.read_events(0) == ([], 0)
        assert store.latest_event_id() == 0

    def test_only_watched_states_in_id_order(self, store):
        expected = _drive_every_watched_state(store)
        events, cursor = store.read_events(0)
        assert [e.event_id for e in events] == sorted(e.event_id for e in events)
        assert all(e.state in WATCHED for e in events)
        assert cursor == store.latest_event_id()
        by_task: dict[int, list[TaskState]] = {}
        for e in events:
            by_task.setdefault(e.task_id, []).append(e.state)
        assert by_task == expected
        finished = next(e for e in events if e.state is S.JOB_FINISHED)
        assert finished.result == b"ok"
        failed = next(e for e in events if e.state is S.FAILED)
        assert failed.error == b"err"

    def test_reading_from_the_returned_cursor_returns_nothing_new(self, store):
        _drive_every_watched_state(store)
        events, cursor = store.read_events(0)
        assert events
        assert store.read_events(cursor) == ([], cursor)
        # New events appear after the cursor, and only them.
        (tid,) = add(store, priority=1)  # claimed before the task waiting for a retry
        lid = launcher(store)
        store.claim(lid, 1)  # CLAIMED is not watched: the start is the event
        start(store, lid, [tid])
        more, cursor2 = store.read_events(cursor)
        assert [(e.task_id, e.state) for e in more] == [(tid, S.RUNNING)]
        assert cursor2 > cursor
        assert store.read_events(cursor2) == ([], cursor2)

    def test_unwatched_tail_advances_the_cursor(self, store):
        ids = add(store, 1, max_retries=1)
        lid = launcher(store)
        store.claim(lid, 1)
        start(store, lid, ids)  # its RUNNING event comes before the cursor
        _, cursor = store.read_events(0)
        finish(store, lid, ids[0], S.RUN_ERROR, 0, 1)  # RUN_ERROR, RESTART_READY: unwatched
        events, cursor2 = store.read_events(cursor)
        assert events == []
        assert cursor2 == store.latest_event_id() > cursor

    @pytest.mark.parametrize("limit", [1, 2, 3, 7])
    def test_small_limit_batches_miss_nothing(self, store, limit):
        _drive_every_watched_state(store)
        everything, _ = store.read_events(0)
        assert len(everything) > 7
        seen, cursor, calls = [], 0, 0
        while True:
            batch, new_cursor = store.read_events(cursor, limit=limit)
            calls += 1
            assert len(batch) <= limit
            assert new_cursor >= cursor
            if new_cursor == cursor:  # nothing after the cursor: every row has been read
                assert batch == []
                break
            assert all(cursor < e.event_id <= new_cursor for e in batch)
            seen.extend(batch)
            cursor = new_cursor
            assert calls < 100
        assert [e.event_id for e in seen] == [e.event_id for e in everything]
        assert seen == everything
        assert calls > 1


# --------------------------------------------------------------------------------------------
# cancel and counts
# --------------------------------------------------------------------------------------------


class TestCancel:
    def test_cancel_only_cancels_pending_tasks(self, store):
        restart, running, finished = add(store, 3, max_retries=1)
        lid = launcher(store)
        store.claim(lid, 3)
        start(store, lid, [running])  # a CLAIMED task could still be cancelled
        finish(store, lid, restart, S.RUN_ERROR, 0, 1)
        finish(store, lid, finished, S.RUN_DONE, result=b"r")
        (ready,) = add(store)
        assert state_of(store, restart) is S.RESTART_READY
        done = store.cancel([ready, restart, running, finished, 10_000_000])
        assert sorted(done) == sorted([ready, restart])
        assert state_of(store, ready) is S.CANCELLED
        assert state_of(store, restart) is S.CANCELLED
        assert state_of(store, running) is S.RUNNING
        assert state_of(store, finished) is S.JOB_FINISHED
        for tid in (ready, restart):
            cancels = [h for h in store.history(tid) if h["to_state"] == "CANCELLED"]
            assert len(cancels) == 1
            assert cancels[0] == store.history(tid)[-1]
        for tid in (running, finished):
            assert "CANCELLED" not in [h["to_state"] for h in store.history(tid)]
        assert store.claim(lid, 10) == []

    def test_cancel_empty_and_twice(self, store):
        assert store.cancel([]) == []
        (tid,) = add(store)
        assert store.cancel([tid]) == [tid]
        assert store.cancel([tid]) == []
        assert len(store.history(tid)) == 1

    def test_cancel_history_row_records_the_state_it_left(self, store):
        # "Every state change has one history row with from/to states": a cancelled task's
        # history must say which state it was cancelled from, like every other move.
        (restart,) = add(store, max_retries=1)
        lid = launcher(store)
        store.claim(lid, 1)
        finish(store, lid, restart, S.RUN_ERROR, 0, 1)
        (ready,) = add(store)
        store.cancel([ready, restart])
        assert transitions(store, ready) == [("READY", "CANCELLED")]
        assert transitions(store, restart)[-1] == ("RESTART_READY", "CANCELLED")
        assert_history_chained(store, restart)

    def test_count_by_state(self, store):
        assert store.count_by_state() == {}
        ids = add(store, 6)
        lid = launcher(store)
        store.claim(lid, 3)
        finish(store, lid, ids[0], S.RUN_DONE, result=b"")
        store.cancel([ids[5]])
        assert store.count_by_state() == {
            "READY": 2, "CLAIMED": 2, "JOB_FINISHED": 1, "CANCELLED": 1,
        }
        start(store, lid, ids[1:2])
        assert store.count_by_state() == {
            "READY": 2, "CLAIMED": 1, "RUNNING": 1, "JOB_FINISHED": 1, "CANCELLED": 1,
        }


# --------------------------------------------------------------------------------------------
# launchers and leases
# --------------------------------------------------------------------------------------------


class TestLeases:
    """Leases on a fake clock (``store.clock``): time moves when the test says so."""

    def test_expired_launcher_is_requeued_live_one_untouched(self, store):
        store.clock = clock = FakeClock()
        ids = add(store, 4)
        dead, live = launcher(store, "dead", lease_s=30), launcher(store, "live", lease_s=30)
        dead_tasks = [c.id for c in store.claim(dead, 2)]
        live_tasks = [c.id for c in store.claim(live, 2)]
        assert sorted(dead_tasks + live_tasks) == ids
        started, claimed = dead_tasks  # one run started, one still in the backlog
        start(store, dead, [started])
        clock.advance(20)
        store.heartbeat(live)  # renews its lease; dead stays silent
        clock.advance(20)  # dead: 40 s silent, past its 30 s lease; live: 20 s
        requeued = store.requeue_expired()
        assert sorted(requeued) == sorted(dead_tasks)
        assert launcher_state(store, dead) == LauncherState.EXPIRED.value
        assert launcher_state(store, live) == LauncherState.RUNNING.value
        for tid, was, now in ((started, "RUNNING", "RESTART_READY"),
                              (claimed, "CLAIMED", "READY")):
            row = row_of(store, tid)
            assert (row["state"], row["launcher_id"]) == (now, None)
            last = store.history(tid)[-1]
            assert (last["from_state"], last["to_state"]) == (was, now)
            assert "lease" in last["message"]
            assert last["at"] == clock.now
            assert_history_chained(store, tid)
        for tid in live_tasks:
            assert row_of(store, tid)["launcher_id"] == live
            assert state_of(store, tid) is S.CLAIMED
        # Requeued tasks are claimable again; nothing more expires right away.
        assert store.requeue_expired() == []
        assert sorted(c.id for c in store.claim(live, 10)) == sorted(dead_tasks)

    def test_nothing_expires_within_the_lease(self, store):
        store.clock = clock = FakeClock()
        add(store, 2)
        lid = launcher(store, lease_s=60)
        store.claim(lid, 2)
        clock.advance(59)
        assert store.requeue_expired() == []
        assert store.count_by_state() == {"CLAIMED": 2}
        assert launcher_state(store, lid) == LauncherState.RUNNING.value

    def test_late_outcome_from_an_expired_launcher_is_dropped(self, store):
        store.clock = clock = FakeClock()
        (tid,) = add(store)
        dead = launcher(store, "dead", lease_s=10)
        store.claim(dead, 1)
        start(store, dead, [tid])
        clock.advance(11)
        assert store.requeue_expired() == [tid]
        finish(store, dead, tid, S.RUN_DONE, result=b"late")
        assert state_of(store, tid) is S.RESTART_READY
        assert row_of(store, tid)["result"] is None
        assert_history_chained(store, tid)

    def test_stop_launcher_requeues_its_running_tasks(self, store):
        store.clock = clock = FakeClock()
        ids = add(store, 3)
        a, b = launcher(store, "a", lease_s=10), launcher(store, "b", lease_s=30)
        store.claim(a, 2)
        store.claim(b, 1)
        start(store, a, ids[1:2])
        finish(store, a, ids[0], S.RUN_DONE, result=b"r")
        assert store.stop_launcher(a, "launcher stopped by test") == [ids[1]]
        assert state_of(store, ids[0]) is S.JOB_FINISHED
        assert state_of(store, ids[1]) is S.RESTART_READY
        assert state_of(store, ids[2]) is S.CLAIMED
        last = store.history(ids[1])[-1]
        assert (last["from_state"], last["to_state"], last["message"]) == (
            "RUNNING", "RESTART_READY", "launcher stopped by test")
        # A stopped launcher is not expired again later (past its lease), and its task runs
        # elsewhere.
        clock.advance(20)
        store.heartbeat(b)
        assert store.requeue_expired() == []
        assert launcher_state(store, a) == LauncherState.STOPPED.value
        assert [c.id for c in store.claim(b, 10)] == [ids[1]]


# --------------------------------------------------------------------------------------------
# change probe, re-opening, schema
# --------------------------------------------------------------------------------------------


def _await_notification(store, timeout=5.0):
    """A NOTIFY reaches the listening socket shortly after the commit: wait for it there."""
    fd = store.notify_fd()
    if fd is not None:
        select.select([fd], [], [], timeout)


class TestChangedAndReopen:
    def test_changed_probe(self, make_store):
        watcher, writer = make_store(), make_store()
        watcher.changed()  # the first call has nothing to compare with
        assert watcher.changed() is False
        ids = add(writer, 1)
        _await_notification(watcher)
        assert watcher.changed() is True
        assert watcher.changed() is False
        # Reads by anyone are not changes.
        writer.get_tasks(ids)
        writer.read_events(0)
        assert watcher.changed() is False

    def test_own_commits_are_not_news_to_the_thread_that_made_them(self, tmp_path):
        """SQLite: ``changed`` reads the data version on the calling thread's connection, so a
        launcher's store thread does not take its own round trips for news; commits of other
        connections (another store, another thread of this one) are news."""
        store, other = open_store(sqlite_url(tmp_path)), open_store(sqlite_url(tmp_path))
        try:
            store.changed()
            add(store, 1)
            assert store.changed() is False
            add(other, 1)
            assert store.changed() is True
            worker = threading.Thread(target=lambda: add(store, 1))
            worker.start()
            worker.join()
            assert store.changed() is True and store.changed() is False
        finally:
            store.close()
            other.close()

    def test_reopening_keeps_tasks(self, make_store):
        first = make_store()
        ids = add(first, 3)
        first.close()
        second = make_store()
        assert [r["id"] for r in second.get_tasks(ids)] == ids
        assert add(second, 1)[0] > max(ids)

    def test_newer_schema_version_is_refused(self, make_store):
        store = make_store()
        with store.engine.begin() as conn:
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="99"))
        store.close()
        with pytest.raises(SchemaMismatch, match="newer") as info:
            make_store()
        assert "99" in str(info.value)
        assert "upgrade" in str(info.value)

    def test_older_schema_version_is_refused(self, make_store):
        store = make_store()
        with store.engine.begin() as conn:
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="0"))
        store.close()
        with pytest.raises(SchemaMismatch, match="older"):
            make_store()

    def test_version_1_store_is_refused_then_upgraded_keeping_its_tasks(self, make_store):
        store = make_store()
        ids = add(store, 2)
        url = store.engine.url.render_as_string(hide_password=False)
        with store.engine.begin() as conn:  # make it look like a version-1 store
            conn.execute(text("DROP TABLE bf_runs"))
            conn.execute(text("DROP TABLE bf_batch_jobs"))
            conn.execute(text("ALTER TABLE bf_launchers DROP COLUMN batch_job_id"))
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="1"))
        store.close()
        with pytest.raises(SchemaMismatch, match="db upgrade"):
            make_store()
        upgraded = open_store(url, upgrade=True)
        assert upgraded.schema_version == SCHEMA_VERSION
        upgraded.close()
        again = open_store(url, upgrade=True)  # nothing left to do
        again.close()
        reopened = make_store()
        assert [r["id"] for r in reopened.get_tasks(ids)] == ids
        with reopened.engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM bf_runs")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM bf_batch_jobs")).scalar() == 0

    def test_other_app_is_refused(self, make_store):
        store = make_store()
        with store.engine.begin() as conn:
            conn.execute(update(meta).where(meta.c.key == "app").values(value="other"))
        store.close()
        with pytest.raises(SchemaMismatch, match="not a balsam_futures store"):
            make_store()


def _fds_under(directory) -> dict[str, str]:
    """Open file descriptors of this process whose target lies in ``directory``."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (e.g. the descriptor listdir itself used)
            continue
        if target.startswith(str(directory)):
            found[fd] = target
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_close_releases_every_file_descriptor(tmp_path):
    store = open_store(sqlite_url(tmp_path))
    ids = add(store, 2)
    lid = launcher(store)
    store.claim(lid, 1)
    store.cancel(ids[1:])
    store.changed()
    store.read_events(0)
    store.get_tasks(ids)
    worker = threading.Thread(target=lambda: add(store, 1))  # another thread's connection
    worker.start()
    worker.join()
    assert _fds_under(tmp_path), "the store should hold its files open before close()"
    store.close()
    assert _fds_under(tmp_path) == {}


class TestSqliteFiles:
    """What only the SQLite backend does with files on disk."""

    def test_url_scheme_must_be_known(self):
        with pytest.raises(ValueError, match="sqlite:///"):
            open_store("mysql://host/db")

    def test_file_that_is_not_sqlite(self, tmp_path):
        path = tmp_path / "balsam.db"
        path.write_bytes(b"this is a text file, not a database\n" * 200)
        with pytest.raises(SchemaMismatch) as info:
            open_store(f"sqlite:///{path}")
        assert str(path) in str(info.value)
        assert "not a SQLite database" in str(info.value)
        assert path.read_bytes().startswith(b"this is a text file")

    def test_sqlite_database_of_another_program(self, tmp_path):
        path = tmp_path / "other.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        with pytest.raises(SchemaMismatch) as info:
            open_store(f"sqlite:///{path}")
        assert "users" in str(info.value)
        assert "not a balsam_futures store" in str(info.value)
        with sqlite3.connect(path) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")}
        assert tables == {"users"}, "the foreign database was modified"

    def test_new_database_file_is_private(self, tmp_path):
        store = open_store(sqlite_url(tmp_path))
        try:
            add(store, 1)
            mode = stat.S_IMODE((tmp_path / "balsam.db").stat().st_mode)
            assert mode == 0o600
        finally:
            store.close()
