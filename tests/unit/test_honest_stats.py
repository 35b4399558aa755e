"""Honest statistics: utilization never above 100 %, whichever share of a node binds."""

from __future__ import annotations

import pytest

from balsam_futures.utilization import build_profile, run_node_share

pytestmark = pytest.mark.timeout(30)

LAUNCHER = {"id": 1, "state": "RUNNING", "started_at": 0.0, "heartbeat_at": 10.0,
            "info": {"nodes": [{"hostname": "n1", "cores": 4, "gpus": ["0", "1"]}]}}


def run(share, cores, gpus, a=0.0, b=10.0, lid=1):
    return {"task_id": 1, "launcher_id": lid, "hosts": ["n1"], "gpus": [gpus],
            "num_nodes": 1, "cores": cores, "node_share": share, "started_at": a,
            "ended_at": b, "state": "RUN_DONE"}


def test_the_binding_share_counts_once():
    shapes = {(1, "n1"): (4, 2)}
    assert run_node_share(run(0.25, 1, []), shapes) == 0.25  # packing binds
    assert run_node_share(run(0.25, 2, []), shapes) == 0.5  # cores bind
    assert run_node_share(run(0.25, 1, ["0", "1"]), shapes) == 1.0  # GPUs bind
    assert run_node_share(run(1.0, 8, ["0", "1"]), shapes) == 1.0  # never above a node


def test_utilization_is_capped_at_one():
    # Eight quarter-node runs at once on one node (over-recorded): 200 % busy if summed.
    runs = [run(0.25, 1, []) for _ in range(8)] + [run(0.5, 1, ["0", "1"]) for _ in range(3)]
    prof = build_profile(runs, [LAUNCHER], 0.0, 10.0, bins=5)
    assert max(prof.node_utilization()) <= 1.0 and prof.mean_node_utilization() <= 1.0
    assert max(prof.gpu_utilization()) <= 1.0 and prof.mean_gpu_utilization() <= 1.0
    assert prof.mean_node_utilization() == pytest.approx(1.0)


def test_a_run_past_its_launchers_life_does_not_overflow():
    dead = {**LAUNCHER, "state": "STOPPED", "heartbeat_at": 5.0}
    prof = build_profile([run(1.0, 4, ["0"], 0.0, 10.0)], [dead], 0.0, 10.0, bins=10)
    assert prof.node_utilization()[-1] == 0.0  # no node held then: nothing to divide
    assert prof.mean_node_utilization() == pytest.approx(1.0)


class _Counts:
    """A stand-in query whose counts by state follow a script (a campaign starting late)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def by_state(self):
        self.calls += 1
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def test_watch_started_before_any_task_waits_for_them():
    from balsam_futures.cli.tasks import _watch

    q = _Counts([{}, {}, {"READY": 2}, {"RUNNING": 1, "JOB_FINISHED": 1},
                 {"JOB_FINISHED": 2}])
    _watch(q, 0.001)
    assert q.calls == 5  # it did not stop at the empty counts
