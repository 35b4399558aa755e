"""The store's side of memoization and data staging, on both backends: cache hits and
followers decided in create_tasks, transfer threads' claims and moves under their lease, and
the upgrade of a version-4 store."""

from __future__ import annotations

import os
import threading

import pytest
from clocks import FakeClock
from old_schemas import rewind
from sqlalchemy import inspect, text

from balsam_futures.backends import LauncherInfo, SqlStore, TaskOutcome, open_store
from balsam_futures.backends.migrations import SCHEMA_VERSION
from balsam_futures.backends.staging_ops import StagingOutcome
from balsam_futures.errors import LauncherFenced
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState, outcome_path

S = TaskState
KEY_A, KEY_B = "a" * 64, "b" * 64


def spec(name="t", key=None, **options) -> TaskSpec:
    return TaskSpec(kind="python", payload=b"p", options=TaskOptions(**options), name=name,
                    cache_key=key)


def launcher(store: SqlStore, lease: float = 1e6) -> int:
    return store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid(), lease_s=lease))


def state(store: SqlStore, task_id: int) -> str:
    return store.get_tasks([task_id])[0]["state"]


def finish(store: SqlStore, lid: int, task_id: int, result: bytes = b"r") -> None:
    store.exchange(lid, [task_id], [TaskOutcome(task_id, outcome_path(S.RUN_DONE, 0, 0, True),
                                                result=result)], 0)


# -- memoization -------------------------------------------------------------------------------


def test_a_key_is_a_miss_then_followed_in_flight_then_a_hit(store):
    lid = launcher(store)
    leader, same_batch = store.create_tasks([spec(key=KEY_A), spec(key=KEY_A)])
    (in_flight,) = store.create_tasks([spec(key=KEY_A)])
    rows = {r["id"]: r for r in store.get_tasks([leader, same_batch, in_flight])}
    assert rows[leader]["state"] == "READY" and rows[leader]["cached_from"] is None
    for follower in (same_batch, in_flight):
        assert rows[follower]["state"] == "AWAITING_PARENTS"
        assert rows[follower]["cached_from"] == leader
    claimed = store.claim(lid, 10)
    assert [t.id for t in claimed] == [leader]  # followers are never claimed
    finish(store, lid, leader, b"42")
    (hit,) = store.create_tasks([spec(key=KEY_A)])
    outcomes = {e.task_id: e for e in store.task_outcomes([same_batch, in_flight, hit])}
    assert all(e.state is S.JOB_FINISHED and e.result == b"42" for e in outcomes.values())
    assert store.cache_counts() == {"hits": 3, "following": 0, "misses": 1}
    (entry,) = store.cache_entries()
    assert (entry["key"], entry["task_id"], entry["hits"]) == (KEY_A, leader, 1)


def test_a_failed_leader_answers_nobody_and_its_follower_runs(store):
    lid = launcher(store)
    leader, follower = store.create_tasks([spec(key=KEY_B), spec(key=KEY_B)])
    store.claim(lid, 10)
    store.exchange(lid, [leader], [TaskOutcome(leader, outcome_path(S.RUN_ERROR, 0, 0, True),
                                               error=b"e")], 0)
    assert state(store, leader) == "FAILED"
    row = store.get_tasks([follower])[0]
    assert (row["state"], row["cached_from"], row["num_parents"]) == ("READY", None, 0)
    (later,) = store.create_tasks([spec(key=KEY_B)])  # follows the one that now runs
    assert store.get_tasks([later])[0]["cached_from"] == follower


def test_refresh_runs_again_and_clear_forgets(store):
    lid = launcher(store)
    (first,) = store.create_tasks([spec(key=KEY_A)])
    store.claim(lid, 1)
    finish(store, lid, first)
    (fresh,) = store.create_tasks([spec(key=KEY_A, cache="refresh")])
    assert state(store, fresh) == "READY"
    assert store.cache_entries()[0]["task_id"] == fresh
    assert store.clear_cache(kind="nope") == 0
    assert store.clear_cache(older_than=3600) == 0  # made just now
    assert store.clear_cache() == 1
    (again,) = store.create_tasks([spec(key=KEY_A)])
    assert state(store, again) == "READY"


def test_concurrent_submitters_of_one_key_run_it_once(make_store):
    """Two executors submit the same keys at once: each key has one leader."""
    stores = [make_store(), make_store()]
    keys = [f"{i:064x}" for i in range(40)]
    barrier = threading.Barrier(2)
    made: list[list[int]] = [[], []]

    def submit(k: int) -> None:
        barrier.wait()
        for key in keys:
            made[k] += stores[k].create_tasks([spec(key=key)])

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = stores[0].get_tasks(made[0] + made[1])
    leaders = [r for r in rows if r["cached_from"] is None]
    assert len(leaders) == len(keys)
    assert sorted(r["cache_key"] for r in leaders) == keys


# -- data staging ------------------------------------------------------------------------------


def staged(**kw) -> TaskSpec:
    return spec(stage_in=[("/srv/in.dat", "in.dat")], **kw)


def test_stage_in_is_claimed_under_the_lease_and_released_to_ready(store):
    lid = launcher(store)
    (tid,) = store.create_tasks([staged()])
    assert state(store, tid) == "AWAITING_STAGE_IN"
    assert store.claim(lid, 10) == []  # not claimable for running yet
    assert store.staging_pending(lid)
    (task,) = store.claim_staging(lid, 10)
    assert (task.id, task.state, task.stage_in) == (tid, S.STAGING_IN,
                                                    [["/srv/in.dat", "in.dat"]])
    assert store.claim_staging(lid, 10) == []  # taken once
    assert store.end_staging(lid, [StagingOutcome(tid, S.STAGING_IN, "1 file")]) == 1
    assert [h["to_state"] for h in store.history(tid)] == [
        "STAGING_IN", "STAGED_IN", "READY"]
    (claimed,) = store.claim(lid, 10)
    assert claimed.workdir == f"default/t_{tid}"  # where its inputs went


def test_a_lost_launcher_gives_back_its_transfers(store):
    lid = launcher(store)
    (waiting, shipping) = store.create_tasks([staged(), spec(stage_out=[("*.out", "/srv/")])])
    store.claim_staging(lid, 10)
    store.claim(lid, 10)
    store.exchange(lid, [shipping], [TaskOutcome(
        shipping, outcome_path(S.RUN_DONE, 0, 0, True, stage_out=True), result=b"r")], 0)
    assert state(store, shipping) == "STAGING_OUT"
    held = {t.id: t.state for t in store.claim_staging(lid, 10)}
    assert held == {shipping: S.STAGING_OUT}
    store.stop_launcher(lid)
    assert (state(store, waiting), state(store, shipping)) == ("AWAITING_STAGE_IN",
                                                               "RESTART_READY")
    # Its late moves are refused: the tasks are no longer its.
    other = launcher(store)
    assert store.end_staging(other, [StagingOutcome(waiting, S.STAGING_IN, "late")]) == 0


def test_a_failed_transfer_fails_the_task_and_a_stage_out_finishes_it(store):
    lid = launcher(store)
    (bad, good) = store.create_tasks([staged(), spec(stage_out=[("*.out", "/srv/")])])
    store.claim_staging(lid, 10)
    store.claim(lid, 10)
    store.exchange(lid, [good], [TaskOutcome(
        good, outcome_path(S.RUN_DONE, 0, 0, True, stage_out=True), result=b"r")], 0)
    store.end_staging(lid, [StagingOutcome(bad, S.STAGING_IN, "stage_in failed: 404",
                                           error=b"err"),
                            StagingOutcome(good, S.STAGING_OUT, "1 file")])
    outcomes = {e.task_id: e for e in store.task_outcomes([bad, good])}
    assert (outcomes[bad].state, outcomes[bad].error) == (S.FAILED, b"err")
    assert (outcomes[good].state, outcomes[good].result) == (S.JOB_FINISHED, b"r")
    assert store.history(bad)[-1]["message"] == "stage_in failed: 404"


def test_a_fenced_transfer_thread_learns_it_at_its_next_claim(store):
    store.clock = clock = FakeClock()
    lid = launcher(store, lease=10)
    (tid,) = store.create_tasks([staged()])
    store.claim_staging(lid, 10)
    clock.advance(30)
    with pytest.raises(LauncherFenced):
        store.claim_staging(lid, 10)
    assert state(store, tid) == "AWAITING_STAGE_IN"


def test_a_version_4_store_upgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    (tid,) = store.create_tasks([spec()])
    store.close()
    rewind(tmp_path / "old.db", 4,
           *(f"DROP INDEX {index}" for index in ("ix_bf_tasks_cache_key", "ix_bf_tasks_stage_in")),
           "DROP TABLE bf_cache",
           *(f"ALTER TABLE bf_tasks DROP COLUMN {column}"
             for column in ("cache_key", "cached_from", "staging")),
           "DROP INDEX ix_bf_tasks_held",
           "CREATE INDEX ix_bf_tasks_held ON bf_tasks (launcher_id) "
           "WHERE state IN ('CLAIMED', 'RUNNING')")
    upgraded = open_store(url, upgrade=True)
    assert upgraded.schema_version == SCHEMA_VERSION
    with upgraded.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("bf_tasks")}
        held = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = "
                                 "'ix_bf_tasks_held'")).scalar()
    assert {"cache_key", "cached_from", "staging"} <= columns
    assert "STAGING_IN" in held and "STAGING_OUT" in held
    assert upgraded.create_tasks([spec(key=KEY_A)]) and state(upgraded, tid) == "READY"
    upgraded.close()


def test_deleting_a_followed_task_lets_its_followers_run(store):
    leader, follower = store.create_tasks([spec(key=KEY_A), spec(key=KEY_A)])
    assert state(store, follower) == "AWAITING_PARENTS"
    assert store.query_delete((("id", "eq", leader),)) == [leader]
    row = store.get_tasks([follower])[0]
    assert (row["state"], row["cached_from"], row["num_parents"]) == ("READY", None, 0)
    assert store.history(follower)[-1]["message"] == (
        "the task it followed was deleted: runs itself")


def test_a_child_with_inputs_waits_for_them_once_its_parents_finish(store):
    lid = launcher(store)
    (parent,) = store.create_tasks([spec()])
    (child,) = store.create_tasks([TaskSpec("python", b"p", TaskOptions(
        stage_in=[("/srv/in.dat", "in.dat")]), name="c", depends_on=(parent,))])
    assert state(store, child) == "AWAITING_PARENTS"
    store.claim(lid, 1)
    finish(store, lid, parent)
    assert state(store, child) == "AWAITING_STAGE_IN"
