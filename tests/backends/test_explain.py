"""`explain`: why a task is not running, in each of its cases, on every backend (the words
come from balsam_futures.explain; the facts from one read of the store)."""

from __future__ import annotations

import os

import pytest
from clocks import FakeClock

from balsam_futures.backends import LauncherInfo, SqlStore
from balsam_futures.explain import explain
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(60)


def spec(name: str = "t", depends_on=(), **options) -> TaskSpec:
    return TaskSpec(kind="python", payload=b"p", options=TaskOptions(**options), name=name,
                    depends_on=depends_on)


def launcher(store: SqlStore, nodes: int = 1, gpus: int = 0, **details) -> int:
    info = LauncherInfo(hostname="h", pid=os.getpid(), lease_s=1e6, info={
        **details, "nodes": [{"hostname": f"n{i}", "cores": 4,
                              "gpus": [str(g) for g in range(gpus)]} for i in range(nodes)]})
    return store.register_launcher(info)


@pytest.fixture
def clocked(store):
    store.clock = FakeClock()
    return store


def why(store: SqlStore, task_id: int) -> str:
    return " ".join(explain(store, task_id).reasons)


def test_waiting_for_parents_names_them_and_their_states(clocked):
    a, b = clocked.create_tasks([spec("a"), spec("b")])
    (child,) = clocked.create_tasks([spec("c", depends_on=[a, b])])
    assert why(clocked, child) == f"waiting for 2 parent(s): task {a} (READY), task {b} (READY)"
    assert explain(clocked, child).state == "AWAITING_PARENTS"


def test_no_live_launcher(clocked):
    (tid,) = clocked.create_tasks([spec()])
    assert why(clocked, tid).startswith("no live launcher")


def test_no_live_launcher_serves_its_tags(clocked):
    launcher(clocked, tags={"exp": "b"})
    (tid,) = clocked.create_tasks([spec(tags={"exp": "a"})])
    assert "no live launcher serves its tags {'exp': 'a'}" in why(clocked, tid)


def test_it_needs_more_nodes_than_the_largest_launcher(clocked):
    launcher(clocked, nodes=4)
    (tid,) = clocked.create_tasks([spec(resources=Resources(num_nodes=8))])
    assert why(clocked, tid) == "it needs 8 nodes and the largest live launcher has 4"


def test_it_needs_more_gpus_than_any_node(clocked):
    launcher(clocked, nodes=1, gpus=2)
    (tid,) = clocked.create_tasks([spec(resources=Resources(gpus_per_rank=4))])
    assert "needs 4 GPUs per node" in why(clocked, tid)


def test_its_wall_time_fits_no_launchers_remaining_time(clocked):
    launcher(clocked, wall_time_min=10)
    (tid,) = clocked.create_tasks([spec(timeout=3600.0)])
    assert "does not fit any live launcher's remaining wall time" in why(clocked, tid)


def test_tasks_ahead_by_priority_and_expected_length(clocked):
    launcher(clocked)
    clocked.create_tasks([spec("urgent", priority=3), spec("long", timeout=500.0)])
    (tid,) = clocked.create_tasks([spec("short", timeout=5.0)])
    assert why(clocked, tid).startswith("2 task(s) ahead of it by priority and expected length")


def test_wider_runs_count_ahead_of_longer_narrower_ones(clocked):
    launcher(clocked, nodes=4)
    wide, narrow = clocked.create_tasks([
        spec("wide", timeout=5.0, resources=Resources(num_nodes=4)), spec("narrow",
                                                                        timeout=500.0)])
    reason = why(clocked, narrow)
    assert reason.startswith("1 task(s) ahead of it") and "1 node(s)" in reason, reason
    assert why(clocked, wide).startswith("it is next in claim order (priority 0, 4 node(s)")


def test_claimed_by_a_launcher_and_about_to_start(clocked):
    lid = launcher(clocked)
    (tid,) = clocked.create_tasks([spec()])
    assert why(clocked, tid).startswith("it is next in claim order")
    clocked.exchange(lid, [], [], 1)
    assert why(clocked, tid) == f"claimed by launcher {lid} and about to start"


def test_a_dead_launcher_does_not_count(clocked):
    info = LauncherInfo(hostname="h", pid=os.getpid(), lease_s=10.0,
                        info={"nodes": [{"hostname": "n", "cores": 1, "gpus": []}]})
    clocked.register_launcher(info)
    (tid,) = clocked.create_tasks([spec()])
    clocked.clock.advance(60.0)
    assert why(clocked, tid).startswith("no live launcher")


def test_unknown_task_is_a_lookup_error(store):
    with pytest.raises(LookupError, match="no task 999"):
        explain(store, 999)
