"""The execution profile: every run's place and time, utilization, throughput, the plot."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from balsam_futures import Resources
from balsam_futures.cli import main
from balsam_futures.utilization import build_profile

pytestmark = pytest.mark.timeout(90)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_runs_are_recorded_with_their_gpus_and_times(make_executor):
    ex = make_executor(max_workers=2, gpus=2)
    gpu = ex.options(resources=Resources(gpus_per_rank=1))
    futs = [gpu.submit(nap, 0.2) for _ in range(4)]
    assert [f.result(timeout=30) for f in futs] == [0.2] * 4
    runs = ex.store.list_runs()
    assert sorted(r["task_id"] for r in runs) == sorted(f.task_id for f in futs)
    for r in runs:
        assert r["hosts"] == ["localhost"] and len(r["gpus"][0]) == 1
        assert r["ended_at"] - r["started_at"] >= 0.2
        assert r["state"] == "RUN_DONE"
    prof = build_profile(runs, ex.store.list_launchers(), bins=10)
    # Two GPUs, four 0.2 s runs back to back in pairs: the GPUs were busy most of the span.
    assert prof.mean_gpu_utilization() > 0.5
    assert sum(prof.finished) == 4


def test_utilization_of_a_known_schedule():
    runs = [
        {"started_at": 0.0, "ended_at": 10.0, "num_nodes": 2, "node_share": 1.0,
         "gpus": [["0"], ["0"]]},
        {"started_at": 0.0, "ended_at": 5.0, "num_nodes": 1, "node_share": 0.5, "gpus": [[]]},
    ]
    launchers = [{"started_at": 0.0, "heartbeat_at": 10.0, "state": "STOPPED",
                  "info": {"nodes": [{"gpus": ["0"]}] * 4}}]
    prof = build_profile(runs, launchers, 0.0, 10.0, bins=2)
    assert prof.busy_nodes == [2.5, 2.0]
    assert prof.node_utilization() == [2.5 / 4, 2.0 / 4]
    assert prof.gpu_utilization() == [0.5, 0.5]
    assert prof.finished == [0, 2]
    assert prof.throughput() == 0.2


def test_stats_command_reports_and_plots(make_executor, site_dir, tmp_path):
    pytest.importorskip("matplotlib")
    ex = make_executor(max_workers=2)
    assert [f.result(timeout=30) for f in [ex.submit(nap, 0.05) for _ in range(6)]]
    png = tmp_path / "profile.png"
    result = CliRunner().invoke(main, ["stats", "--site", str(site_dir), "--json",
                                       "--plot", str(png)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[0])
    assert summary["runs"] == 6 and summary["states"] == {"JOB_FINISHED": 6}
    assert 0 < summary["node_utilization"] <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
