"""The query API (balsam_futures.query.TaskQuery) on every backend."""

from __future__ import annotations

import pytest

from balsam_futures.backends import LauncherInfo, TaskOutcome
from balsam_futures.query import TaskQuery
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = pytest.mark.timeout(60)


def make(store, n, **options):
    opts = TaskOptions(**options)
    return store.create_tasks([TaskSpec("python", b"p", opts, name=f"t{i}") for i in range(n)])


def fail_all(store, ids):
    lid = store.register_launcher(LauncherInfo("h", 1))
    claimed = store.claim(lid, len(ids), tags=None)
    store.record_outcomes(lid, [
        TaskOutcome(c.id, outcome_path(TaskState.RUN_ERROR, 0, 0, True), error=None)
        for c in claimed if c.id in set(ids)])


@pytest.fixture
def populated(store):
    small = make(store, 3, tags={"exp": "a"}, data={"lr": 0.1, "opt": "adam"},
                 resources=Resources(num_nodes=2), priority=5)
    big = make(store, 2, tags={"exp": "b"}, data={"lr": 0.5}, resources=Resources(num_nodes=256))
    return store, small, big


def test_filter_by_tags_data_resources_and_state(populated):
    store, small, big = populated
    q = TaskQuery(store)
    assert q.count() == 5
    assert q.filter(tags={"exp": "a"}).ids() == small
    assert q.filter(tags__exp="b").ids() == big
    assert q.filter(num_nodes__le=128).ids() == small
    assert q.filter(data__lr__gt=0.2).ids() == big
    assert q.filter(data__opt="adam").count() == 3
    assert q.filter(state="READY").count() == 5
    assert q.filter(state__in=["READY", "FAILED"]).count() == 5
    assert q.filter(name__startswith="t0").count() == 2
    assert q.filter(id__in=big).ids() == big


def test_lazy_chainable_ordering_and_slicing(populated):
    store, small, big = populated
    base = TaskQuery(store).filter(tags={"exp": "a"})
    narrower = base.filter(name="t1")  # base is unchanged
    assert base.count() == 3 and narrower.count() == 1
    assert [r["id"] for r in TaskQuery(store).order_by("-id")[:2]] == sorted(big)[::-1]
    assert TaskQuery(store).order_by("-priority").first()["id"] in small
    row = TaskQuery(store).filter(id=small[0]).first()
    assert row["tags"] == {"exp": "a"} and row["data"]["opt"] == "adam"
    assert "payload" not in row


def test_bulk_update_moves_only_allowed_states_with_history(populated):
    store, small, big = populated
    fail_all(store, small + big)
    q = TaskQuery(store)
    assert q.by_state() == {"FAILED": 5}
    # Every FAILED task with num_nodes <= 128 back to RESTART_READY:
    assert q.filter(state="FAILED", num_nodes__le=128).update(state="RESTART_READY") == 3
    assert q.by_state() == {"FAILED": 2, "RESTART_READY": 3}
    history = store.history(small[0])
    assert history[-1]["to_state"] == "RESTART_READY"
    assert history[-1]["message"] == "updated by a query"
    # READY cannot move to JOB_FINISHED: nothing changes.
    assert q.filter(state="RESTART_READY").update(state="JOB_FINISHED") == 0
    assert q.filter(id__in=big).update(priority=9) == 2
    assert {r["priority"] for r in q.filter(id__in=big)} == {9}


def test_delete_with_history_and_held_tasks_kept(populated):
    store, small, big = populated
    lid = store.register_launcher(LauncherInfo("h", 1))
    running, claimed = (c.id for c in store.claim(lid, 2))  # the two priority-5 tasks
    store.exchange(lid, [running], [], 0)  # its run started; the other one waits, CLAIMED
    assert store.count_by_state() == {"RUNNING": 1, "CLAIMED": 1, "READY": 3}
    q = TaskQuery(store)
    # Held tasks (RUNNING, or CLAIMED by a launcher that may start them any moment) stay.
    assert q.filter(tags={"exp": "a"}).delete() == 1
    assert q.count() == 4
    (gone,) = set(small) - {running, claimed}
    assert store.history(gone) == [] and store.get_tasks([gone]) == []
    assert q.filter(id__in=[running, claimed]).delete(running=True) == 2
    assert q.count() == 2


def test_bad_queries_say_what_to_fix(populated):
    store, *_ = populated
    q = TaskQuery(store)
    with pytest.raises(ValueError, match="unknown task field"):
        q.filter(colour="red")
    with pytest.raises(ValueError, match="unknown task state"):
        q.filter(state="DONE")
    with pytest.raises(ValueError, match="cannot update"):
        q.update(payload=b"x")
    with pytest.raises(TypeError, match="list"):
        q.filter(state__in="READY")
    with pytest.raises(ValueError, match="order"):
        q.order_by("nope")
