"""The queries behind `ls --tag`, `failures` and the campaign page, on both backends."""

from __future__ import annotations

import pytest

from balsam_futures.backends import LauncherInfo, TaskOutcome
from balsam_futures.query import TaskQuery
from balsam_futures.serialization import dump_exception
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = pytest.mark.timeout(60)


def _tasks(store, tag_values):
    return store.create_tasks([TaskSpec("python", b"p", TaskOptions(tags={"exp": v}), f"t{v}")
                               for v in tag_values])


def test_a_tag_key_given_twice_matches_either_value(store):
    _tasks(store, ["a", "a", "b", "c"])
    q = TaskQuery(store)
    assert q.tagged_any({"exp": ["a", "b"]}).count() == 3
    assert q.tagged_any({"exp": ["c"]}).count() == 1
    assert q.tagged_any({"exp": "a"}).by_state() == {"READY": 2}


def test_failures_are_read_in_pages_and_grouped(store):
    ids = _tasks(store, ["x"] * 7)
    lid = store.register_launcher(LauncherInfo("h", 1))
    claimed = store.claim(lid, 10)
    outcomes = []
    for k, task in enumerate(claimed):
        err = dump_exception(ValueError(f"bad value {k}") if k % 2 else OSError(f"no /f{k}"),
                             f"Task {task.id}")
        outcomes.append(TaskOutcome(task.id, outcome_path(TaskState.RUN_ERROR, 0, 0, True),
                                    error=err, message="x"))
    store.record_outcomes(lid, outcomes)
    q = TaskQuery(store)
    rows = list(q._failed_rows(page=2))  # four pages of two, then one short page
    assert sorted(r["id"] for r in rows) == sorted(ids)
    groups = q.failures()
    assert sorted(g.count for g in groups) == [3, 4]
    assert {g.signature for g in groups} == {"ValueError: bad value <n>", "OSError: no <path>"}
    assert q.failure_group(groups[0].group).count() == groups[0].count
    with pytest.raises(ValueError, match="no failure group"):
        q.failure_group("zzz")
    assert store.task_payload(ids[0]) == ("python", b"p")
    assert store.task_payload(10**6) is None
    assert store.slowest_names(0.0) == []  # no runs recorded by these outcomes
