"""Dependencies between tasks, futures as arguments, and tasks that submit tasks."""

from __future__ import annotations

import os
import time

import pytest

from balsam_futures import BalsamExecutor, DependencyError, current_task

pytestmark = pytest.mark.timeout(90)


def add(a, b=0):
    return a + b


def total(values):
    return sum(values)


def fail(message):
    raise RuntimeError(message)


def write_then_return(path, value):
    time.sleep(0.2)  # long enough that a child started early would see no file
    with open(path, "w") as f:
        f.write(str(value))
    return value


def read(path):
    with open(path) as f:
        return f.read()


def whoami():
    ctx = current_task()
    return {"id": ctx.id, "name": ctx.name, "tags": dict(ctx.tags), "data": dict(ctx.data)}


def spawn_children(n):
    # Runs as a task: an executor made here joins the same store, and its tasks record this
    # task as their parent.  It needs a second launcher slot for the children to run in.
    from concurrent.futures import as_completed

    with BalsamExecutor() as ex:
        futs = [ex.submit(add, i, 1) for i in range(n)]
        return current_task().id, sorted(f.result() for f in as_completed(futs)), \
            [f.task_id for f in futs]


def test_three_level_chain_with_futures_as_arguments(make_executor):
    ex = make_executor()
    a = ex.submit(add, 1, 2)
    b = ex.submit(add, a, 10)
    c = ex.submit(total, [a, b, 100])
    assert c.result(timeout=30) == 3 + 13 + 100
    states = [h["to_state"] for h in ex.store.history(c.task_id)]
    assert states[0] == "READY" and states[-1] == "JOB_FINISHED"
    assert any(h["message"] == "parents finished" for h in ex.store.history(c.task_id))


def test_depends_on_orders_tasks_without_passing_results(make_executor, tmp_path):
    ex = make_executor()
    path = str(tmp_path / "out")
    parent = ex.submit(write_then_return, path, 42)
    child = ex.options(depends_on=[parent]).submit(read, path)
    assert child.result(timeout=30) == "42"
    row = ex.store.get_tasks([child.task_id])[0]
    assert row["num_parents"] == 1


def test_failed_parent_fails_children_and_grandchildren_naming_the_parent(make_executor):
    ex = make_executor()
    bad = ex.submit(fail, "boom")
    child = ex.submit(add, bad, 1)
    grandchild = ex.submit(add, child, 1)
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(timeout=30)
    with pytest.raises(DependencyError, match=str(bad.task_id)) as info:
        child.result(timeout=30)
    assert info.value.parent_id == bad.task_id
    with pytest.raises(DependencyError, match=str(child.task_id)):
        grandchild.result(timeout=30)
    history = ex.store.history(grandchild.task_id)
    assert [h["to_state"] for h in history] == ["FAILED"]
    assert f"parent {child.task_id}" in history[0]["message"]


def test_allow_parent_failure_runs_the_child(make_executor):
    ex = make_executor()
    bad = ex.submit(fail, "boom")
    child = ex.options(depends_on=[bad], allow_parent_failure=True).submit(add, 5)
    assert child.result(timeout=30) == 5


def test_parent_already_finished_and_ids_as_dependencies(make_executor):
    ex = make_executor()
    done = ex.submit(add, 1)
    assert done.result(timeout=30) == 1
    child = ex.options(depends_on=[done.task_id]).submit(add, 2)
    assert child.result(timeout=30) == 2
    with pytest.raises(TypeError, match="depends_on"):
        ex.options(depends_on=["x"]).submit(add, 1)


def test_current_task_inside_a_task(make_executor):
    ex = make_executor()
    fut = ex.options(name="who", tags={"exp": "a"}, data={"lr": 0.1}).submit(whoami)
    assert fut.result(timeout=30) == {"id": fut.task_id, "name": "who", "tags": {"exp": "a"},
                                      "data": {"lr": 0.1}}
    assert current_task() is None


def test_master_task_spawns_a_hundred_children_inside_the_launcher(make_executor):
    ex = make_executor(max_workers=2)  # one slot for the master task, one for its children
    master = ex.submit(spawn_children, 100)
    master_id, results, child_ids = master.result(timeout=60)
    assert master_id == master.task_id
    assert results == [i + 1 for i in range(100)]
    rows = ex.store.get_tasks(child_ids)
    assert {r["parent_id"] for r in rows} == {master.task_id}
    assert {r["state"] for r in rows} == {"JOB_FINISHED"}
    assert os.getpid()  # the master process itself never ran a child
