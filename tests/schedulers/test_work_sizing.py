"""The queue service sizes jobs by work (node-hours from the tasks' expected run times), and
`queue submit --dry-run` prints the script and the backlog it is for, submitting nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_service import MemoryScheduler, service, world  # noqa: F401 - the fixture

from balsam_futures.backends import open_store
from balsam_futures.backends.estimates import BacklogWork
from balsam_futures.cli import main
from balsam_futures.schedulers.service import job_wall_time_min
from balsam_futures.sitedir import open_site
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(30)


def add(store, n, *, timeout=None, nodes=1, tags=None):
    options = TaskOptions(tags=tags or {}, timeout=timeout,
                          resources=Resources(num_nodes=nodes, node_packing_count=1))
    return store.create_tasks([TaskSpec("python", b"p", options, f"t{i}") for i in range(n)])


def test_short_tasks_need_fewer_nodes_than_their_count(world):  # noqa: F811
    store, _, manager = world
    add(store, 40, timeout=60.0)  # 40 node-minutes: 2 nodes finish them in a 30 min job
    report = service(manager, max_nodes=4, max_queued_jobs=2).tick()
    assert report.nodes_needed == 2
    assert report.work.node_seconds == pytest.approx(2400.0)
    assert [j["num_nodes"] for j in manager.jobs()] == [2]
    assert "0.67 node-hour(s) expected" in report.summary()


def test_unknown_run_times_are_sized_by_count(world):  # noqa: F811
    store, _, manager = world
    add(store, 3)  # no timeout, no history: each keeps a node
    assert service(manager).tick().nodes_needed == 3


def test_wall_time_stretches_to_the_longest_task_within_the_queue_limit(world):  # noqa: F811
    store, _, manager = world
    add(store, 1, timeout=2400.0)  # 40 min: a 30 min job would never start it
    report = service(manager, wall_time_min=30).tick()
    assert report.wall_time_min == 48  # 40 min x WALL_MARGIN
    [job] = manager.jobs()
    assert job["wall_time_min"] == 48
    assert job_wall_time_min(BacklogWork(0, 0, 7200.0), 30, 60) == 60  # queue max_wall


def test_dry_run_prints_the_script_and_the_backlog_and_submits_nothing(tmp_path):
    site = open_site(tmp_path / "site")
    store = open_store(site.db_url)
    add(store, 6, timeout=600.0)
    store.close()
    result = CliRunner().invoke(main, ["queue", "submit", "--dry-run", "--site",
                                       str(site.path), "-n", "2", "-t", "30",
                                       "--scheduler", "slurm", "-A", "proj"])
    assert result.exit_code == 0, result.output
    assert "#SBATCH" in result.output and "dry run: nothing submitted" in result.output
    assert "6 claimable task(s)" in result.output
    assert "expected work 1.00 node-hour(s)" in result.output
    store = open_store(site.db_url)
    assert store.batch_jobs() == []
    store.close()


def test_dry_run_is_refused_like_a_submit(tmp_path):
    site = open_site(tmp_path / "site")
    (site.path / "settings.json").write_text('{"queues": {"debug": {"max_nodes": 1}}}')
    result = CliRunner().invoke(main, ["queue", "submit", "--dry-run", "--site",
                                       str(site.path), "-n", "2", "-t", "30", "-q", "debug"])
    assert result.exit_code != 0 and "at most 1" in result.output
