"""Failures where people look: the error in the history (``ls --history``), and failed runs
grouped by cause (``failures``, ``ex.tasks().failures()``, ``retry/rm --group``), on a real
campaign run by a real local launcher."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
from click.testing import CliRunner

from balsam_futures import BalsamExecutor, ShellApp
from balsam_futures.cli import main

pytestmark = pytest.mark.timeout(120)


def succeed(i):
    return i


def bad_input(i):
    raise ValueError(f"bad input {i} in /data/run{i}/in.txt")


def lookup(i):
    return {}[f"key-{i}"]


def simulated(i):
    raise RuntimeError("simulated error")


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """18 successes and 4 planted causes of failure: 5 ValueErrors (numbers and paths
    differ), 3 KeyErrors (ids differ), 2 'simulated error', 2 shell exits with code 3."""
    site = tmp_path_factory.mktemp("triage") / "site"
    ex = BalsamExecutor(max_workers=2, site=str(site))
    try:
        futs = [ex.submit(succeed, i) for i in range(18)]
        futs += [ex.submit(bad_input, i) for i in range(5)]
        futs += [ex.submit(lookup, 1000 + i) for i in range(3)]
        futs += [ex.submit(simulated, i) for i in range(2)]
        app = ShellApp("echo starting {n}; echo disk full at /scratch/out{n}.h5 >&2; exit 3")
        futs += [ex.submit(app, n=n) for n in range(2)]
        concurrent.futures.wait(futs, timeout=90)
        assert all(f.done() for f in futs)
        groups = ex.tasks().failures()
    finally:
        ex.shutdown(wait=True)
    return site, groups


def test_groups_are_exactly_the_planted_causes(campaign):
    _site, groups = campaign
    by_count = sorted((g.count, g.signature) for g in groups)
    assert [c for c, _ in by_count] == [2, 2, 3, 5], by_count
    sigs = {s for _, s in by_count}
    assert any(s.startswith("ValueError: bad input <n> in <path>") and "bad_input" in s
               for s in sigs), sigs
    assert any(s.startswith("KeyError: 'key-<n>'") for s in sigs), sigs
    assert any(s.startswith("RuntimeError: simulated error") for s in sigs), sigs
    assert "shell exit code <n>: disk full at <path>" in sigs, sigs
    assert sum(len(g.task_ids) for g in groups) == 12


def test_ls_history_shows_the_error_under_run_error(campaign):
    site, groups = campaign
    sim = next(g for g in groups if "simulated" in g.signature)
    out = cli("ls", "--site", site, "--state", "FAILED", "--history", "--id", sim.example_id)
    assert "RUNNING" in out and "RUN_ERROR" in out and "simulated error" in out
    run_error = next(line for line in out.splitlines() if "-> RUN_ERROR" in line)
    assert "RuntimeError: simulated error" in run_error  # the one-line summary in the row
    assert "| RuntimeError: simulated error" in out  # the traceback's last lines under it
    shell = next(g for g in groups if g.signature.startswith("shell"))
    out = cli("ls", "--site", site, "--history", "--id", shell.example_id)
    assert "exit code 3: disk full at /scratch/out" in out


def test_show_prints_dates_callable_and_arguments(campaign):
    site, groups = campaign
    bad = next(g for g in groups if g.signature.startswith("ValueError"))
    out = cli("show", "--site", site, bad.example_id)
    assert "test_failure_triage.bad_input" in out and "arguments: (" in out
    created = next(line for line in out.splitlines() if "created_at:" in line)
    assert "-" in created and ":" in created.split("created_at:")[1]  # a date, not a float
    assert "bad input" in out  # the error


def test_failures_command_and_acting_on_a_group(campaign):
    site, groups = campaign
    out = json.loads(cli("failures", "--site", site, "--json"))
    assert sorted(g["count"] for g in out) == [2, 2, 3, 5]
    table = cli("failures", "--site", site)
    assert all(g.group in table for g in groups)
    key = next(g for g in groups if g.signature.startswith("KeyError"))
    assert cli("retry", "--site", site, "--group", key.group) == "retry: 3 task(s)\n"
    shell = next(g for g in groups if g.signature.startswith("shell"))
    assert cli("rm", "--site", site, "--group", shell.group) == "rm: 2 task(s)\n"
    left = json.loads(cli("failures", "--site", site, "--json"))
    assert sorted(g["count"] for g in left) == [2, 5]  # retried and removed groups are gone
    result = CliRunner().invoke(main, ["rm", "--site", str(site), "--group", "nosuch"])
    assert result.exit_code == 1 and "no failure group 'nosuch'" in result.output


def test_a_tag_given_twice_with_one_key_matches_either_value(tmp_path):
    from balsam_futures.backends import open_store
    from balsam_futures.tasks import TaskOptions, TaskSpec

    site = tmp_path / "site"
    cli("init", site)
    store = open_store(f"sqlite:///{site / 'balsam.db'}")
    store.create_tasks([TaskSpec("python", b"p", TaskOptions(tags={"exp": v}), f"t{v}")
                        for v in ("a", "b", "c")])
    store.close()
    out = json.loads(cli("ls", "--site", site, "--tag", "exp=a", "--tag", "exp=b", "--json"))
    assert sorted(t["name"] for t in out) == ["ta", "tb"]
    assert cli("kill", "--site", site, "--tag", "exp=a", "--tag", "exp=c") == \
        "kill: 2 task(s)\n"
