"""A new user's session from the shell alone, against the real one-node Slurm cluster:

init a site, submit tasks (from Python), submit a launcher job to Slurm, watch progress, see
failures with their history, retry them, kill one, and read utilization.
"""

from __future__ import annotations

import json
import time

import pytest
from schedtools import cli

from balsam_futures import BalsamExecutor

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


# The batch job's launcher imports task functions by reference: builtins only, here.
def test_a_campaign_from_the_shell(slurm_cluster, tmp_path):
    site = tmp_path / "site"
    code, out = cli("init", site)
    assert code == 0 and "site ready" in out
    (site / "settings.json").write_text(json.dumps({
        "scheduler": "slurm", "queues": {"debug": {"max_nodes": 1}},
        "options": {"workers": 2, "idle_timeout": 2.0}}))

    with BalsamExecutor(launcher=False, site=site) as ex:
        tagged = ex.options(tags={"workflow": "demo"})
        good = [tagged.submit(pow, i, 2) for i in range(6)]
        bad = [tagged.submit(int, f"bad input {i}") for i in range(2)]
        slow = tagged.options(name="slow").submit(time.sleep, 600)
        ex.flush()

        code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 5, "-q", "debug",
                        "--job-mode", "serial", env=slurm_cluster.env)
        assert code == 0 and "slurm job" in out, out
        assert [f.result(timeout=60) for f in good] == [i * i for i in range(6)]
        for f in bad:
            with pytest.raises(ValueError):
                f.result(timeout=60)

        # Failures, with every state change and its message.
        code, out = cli("ls", "--site", site, "--state", "FAILED", "--history")
        assert code == 0 and out.count("-> RUN_ERROR") == 2 and "FAILED" in out
        code, out = cli("show", "--site", site, bad[0].task_id)
        assert code == 0 and "bad input 0" in out and "ValueError" in out

        # Retry them: they run again (and fail again: the input is still bad).
        code, out = cli("retry", "--site", site, "--state", "FAILED")
        assert (code, out.strip()) == (0, "retry: 2 task(s)")

        # Kill the slow one while it runs.
        deadline = time.monotonic() + 60
        while cli("ls", "--site", site, "--name", "slow", "--json")[1].count("RUNNING") == 0:
            assert time.monotonic() < deadline, "the slow task never started"
            time.sleep(0.1)
        code, out = cli("kill", "--site", site, "--name", "slow")
        assert (code, out.strip()) == (0, "kill: 1 task(s)")

        # Watch until every task has ended.
        code, out = cli("ls", "--site", site, "--tag", "workflow=demo", "--watch",
                        "--interval", "0.2")
        assert code == 0 and "9/9 done" in out
        counts = json.loads(cli("ls", "--site", site, "--by-states", "--json")[1])
        assert counts == {"JOB_FINISHED": 6, "FAILED": 2, "KILLED": 1}
        history = [h["to_state"] for h in ex.store.history(bad[1].task_id)]
        assert history.count("RUN_ERROR") == 2  # ran twice: once more after the retry
        assert slow.done()

    # Utilization and throughput from the execution profile.
    code, out = cli("stats", "--site", site, "--json")
    summary = json.loads(out)
    assert summary["runs"] == 6 + 2 * 2 + 1
    assert 0 < summary["node_utilization"] <= 1 and summary["tasks_per_second"] > 0
    code, out = cli("queue", "ls", "--site", site, "--history", env=slurm_cluster.env)
    assert code == 0 and "debug" in out
