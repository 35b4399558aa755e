"""examples/deephyper_like: the asynchronous search runs, records failures, and resumes.

Each test runs the real script in a subprocess, on its own SQLite site, and then reads the
store to check what happened: which tasks exist, their configurations, and their history.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

for _module in ("sklearn", "optuna", "matplotlib"):
    pytest.importorskip(_module, reason=f"the example's requirements are not installed (no "
                        f"{_module}): pip install -e '.[examples]'")

from balsam_futures.query import TaskQuery  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deephyper_like"
SEARCH = EXAMPLE / "search.py"
CAMPAIGN = "digits-mlp"  # the script's default
WORKERS = 2
RESULT = re.compile(r"^\[\s*\d+/\d+\] task (\d+)")
FINAL = {"JOB_FINISHED", "FAILED"}


def _command(site: Path, *args: str) -> list[str]:
    return [sys.executable, str(SEARCH), "--site", str(site), "--workers", str(WORKERS), *args]


def _interruptible() -> None:
    # A child started from a non-interactive shell's background job inherits SIGINT ignored,
    # and Python then never raises KeyboardInterrupt; give the master the default again.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_search(tmp_path: Path, site: Path, *args: str, timeout: float = 180) -> str:
    proc = subprocess.run(_command(site, *args), cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def start_search(tmp_path: Path, site: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(_command(site, *args), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible)


def read_results(proc: subprocess.Popen, count: int) -> list[str]:
    """Lines of the master's output up to its ``count``-th result line."""
    lines: list[str] = []
    while sum(bool(RESULT.match(line)) for line in lines) < count:
        line = proc.stdout.readline()
        assert line, "the search ended early:\n" + "".join(lines)
        lines.append(line)
    return lines


def campaign_tasks(site: Path) -> tuple[list[dict], dict[int, list[dict]]]:
    """The campaign's task rows, in id order, and each task's history."""
    query = TaskQuery.open(site=str(site))
    try:
        rows = list(query.filter(tags={"campaign": CAMPAIGN}).order_by("id"))
        return rows, {row["id"]: query.store.history(row["id"]) for row in rows}
    finally:
        query.store.close()


def config_key(row: dict) -> tuple:
    return tuple(sorted(row["data"].items()))


def check_campaign(site: Path, budget: int) -> tuple[list[dict], dict[int, list[dict]]]:
    """Exactly ``budget`` tasks, all ended, each configuration once, each with one result."""
    rows, history = campaign_tasks(site)
    assert len(rows) == budget
    assert {row["state"] for row in rows} <= FINAL, [row["state"] for row in rows]
    assert len({config_key(row) for row in rows}) == budget, "a configuration ran twice"
    for row in rows:
        ends = [h["to_state"] for h in history[row["id"]] if h["to_state"] in FINAL]
        assert ends == [row["state"]], (row["id"], history[row["id"]])
    return rows, history


def starts(history: list[dict]) -> int:
    return sum(h["to_state"] == "RUNNING" for h in history)


def test_a_small_search_prints_the_best_and_writes_the_plot(tmp_path):
    site, png, budget = tmp_path / "site", tmp_path / "search.png", 6
    out = run_search(tmp_path, site, "--budget", str(budget), "--plot", str(png))

    results = [line for line in out.splitlines() if RESULT.match(line)]
    assert len(results) == budget, out
    assert re.search(r"^best: accuracy 0\.\d{4} \(task \d+\): learning_rate_init=", out, re.M), out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows, history = check_campaign(site, budget)
    assert all(starts(history[row["id"]]) == 1 for row in rows)
    # Evaluations overlapped, never more than the workers: N in flight, not one at a time.
    spans = {task_id: (min(h["at"] for h in hist if h["to_state"] == "RUNNING"),
                       max(h["at"] for h in hist if h["to_state"] in FINAL))
             for task_id, hist in history.items()}
    overlap = max(sum(a <= t < b for a, b in spans.values()) for t, _ in spans.values())
    assert overlap == WORKERS, spans
    # No batch barrier: some evaluation b was submitted after an evaluation a had returned
    # while another one, c, submitted before that, was still running.
    created = {row["id"]: row["created_at"] for row in rows}
    assert any(spans[a][1] < created[b] < spans[c][1] and created[c] < spans[a][1]
               for a in spans for b in spans for c in spans), (created, spans)


def test_with_gpus_each_evaluation_asks_for_one_and_gets_its_own(tmp_path):
    """Two GPUs (named by CUDA_VISIBLE_DEVICES, as a batch system would): two evaluations in
    flight, each task asking for one GPU, each worker pinned to a different one."""
    site, budget = tmp_path / "site", 4
    proc = subprocess.run([sys.executable, str(SEARCH), "--site", str(site), "--budget",
                           str(budget)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ", 2 at a time, one GPU each;" in proc.stdout
    rows, _ = check_campaign(site, budget)
    assert {row["gpus_per_rank"] for row in rows} == {1}
    used = set(re.findall(r"\(\d+\.\d s on GPU (\d)\)", proc.stdout))
    assert used <= {"0", "1"} and used, proc.stdout


def test_a_diverging_configuration_raises_diverged():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import digits_model
    finally:
        sys.path.remove(str(EXAMPLE))
    config = {"learning_rate_init": 1.5, "momentum": 0.95, "hidden_units": 32, "alpha": 1e-4}
    with pytest.raises(digits_model.Diverged, match="lower learning_rate_init"):
        digits_model.evaluate(config)
    assert digits_model.evaluate({**config, "learning_rate_init": 0.02})["accuracy"] > 0.9


QUEUE_BAD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {example!r})
    import digits_model
    from balsam_futures import BalsamExecutor
    bad = {{"learning_rate_init": 1.9, "momentum": 0.98, "hidden_units": 64, "alpha": 1e-5}}
    ex = BalsamExecutor(site={site!r}, launcher=False)  # stored only: the search runs it
    fut = ex.options(name="evaluate", tags={{"campaign": {campaign!r}}}, data=bad).submit(
        digits_model.evaluate, bad)
    print(fut.task_id)
""")


def test_failed_evaluations_are_recorded_and_the_search_goes_on(tmp_path):
    """A diverging configuration already queued in the campaign (as a stopped master would
    leave it) runs under the search's launcher, fails, is counted, and the search finishes."""
    site, budget = tmp_path / "site", 3
    queued = subprocess.run([sys.executable, "-c", QUEUE_BAD.format(
        example=str(EXAMPLE), site=str(site), campaign=CAMPAIGN)],
        capture_output=True, text=True, timeout=60)
    assert queued.returncode == 0, queued.stderr
    bad_id = int(queued.stdout)

    # Seeded: an unseeded search's two random points may both diverge (it then has no best).
    out = run_search(tmp_path, site, "--budget", str(budget), "--seed", "1")

    assert re.search(rf"^\[\s*\d+/{budget}\] task {bad_id}\s+FAILED\s+Diverged: training "
                     "diverged", out, re.M), out
    assert re.search(r"failed: (\d+ \w+, )*\d+ Diverged", out), out
    assert "best: accuracy" in out
    rows, history = check_campaign(site, budget)
    bad_row = next(row for row in rows if row["id"] == bad_id)
    assert bad_row["state"] == "FAILED" and bad_row["error"] is not None
    assert "RUN_ERROR" in [h["to_state"] for h in history[bad_id]]


def test_resume_after_kill_9_loses_no_evaluation_and_repeats_no_configuration(tmp_path):
    site, budget = tmp_path / "site", 8
    master = start_search(tmp_path, site, "--budget", str(budget))
    try:
        first = read_results(master, 3)
        master.kill()
        master.wait(timeout=30)
    finally:
        if master.poll() is None:
            master.kill()
        master.stdout.close()
    before, _ = campaign_tasks(site)
    assert 3 <= len(before) < budget, "".join(first)

    out = run_search(tmp_path, site, "--budget", str(budget))

    assert re.search(rf"^re-attached to the {len(before)} task\(s\)", out, re.M), out
    # Every result of the first master is told again, then the rest: one line per task.
    told = [int(RESULT.match(line).group(1)) for line in out.splitlines() if RESULT.match(line)]
    assert sorted(told) == [row["id"] for row in campaign_tasks(site)[0]], out
    assert {int(RESULT.match(line).group(1)) for line in first if RESULT.match(line)} \
        <= set(told)
    rows, history = check_campaign(site, budget)
    # Tasks the killed master's launcher held were handed back and ran again (at least once,
    # as recorded in their history); at most one per worker, and each has one result.
    rerun = [row["id"] for row in rows if starts(history[row["id"]]) > 1]
    assert len(rerun) <= WORKERS
    for task_id in rerun:
        assert "RESTART_READY" in [h["to_state"] for h in history[task_id]]


def test_resume_after_ctrl_c_runs_each_evaluation_exactly_once(tmp_path):
    site, budget = tmp_path / "site", 8
    master = start_search(tmp_path, site, "--budget", str(budget))
    try:
        read_results(master, 3)
        master.send_signal(signal.SIGINT)
        rest = master.stdout.read()
        assert master.wait(timeout=60) == 130, rest
    finally:
        if master.poll() is None:
            master.kill()
        master.stdout.close()
    assert "interrupted: waiting for" in rest
    # The interrupted master let its running evaluations finish and be recorded.
    before, _ = campaign_tasks(site)
    assert 3 <= len(before) < budget
    assert {row["state"] for row in before} <= FINAL, [row["state"] for row in before]

    out = run_search(tmp_path, site, "--budget", str(budget))

    assert re.search(rf"^resumed: {len(before)} evaluation\(s\) done \(\d+ failed\), "
                     rf"0 still running, {budget - len(before)} to submit", out, re.M), out
    rows, history = check_campaign(site, budget)
    assert all(starts(history[row["id"]]) == 1 for row in rows), history


def test_a_campaign_replayed_with_its_seed_is_answered_from_the_cache(tmp_path):
    """The same --seed proposes the same first (random) points: a second campaign in the
    same store answers those that succeeded from the cache without a run (a diverged one runs
    again: only successes are reused), and says so; resuming a finished campaign answers
    from the store without a run too."""
    site, budget = tmp_path / "site", 4
    run_search(tmp_path, site, "--budget", str(budget), "--seed", "7")
    out = run_search(tmp_path, site, "--budget", str(budget), "--seed", "7",
                     "--campaign", "replay")
    query = TaskQuery.open(site=str(site))
    try:
        first = {config_key(r): r for r in query.filter(tags={"campaign": CAMPAIGN})}
        replay = list(query.filter(tags={"campaign": "replay"}).order_by("id"))
        assert len(replay) == budget
        assert {config_key(r) for r in replay} == set(first)  # the same points
        succeeded = 0
        for row in replay:
            original = first[config_key(row)]
            if original["state"] == "JOB_FINISHED":
                succeeded += 1
                assert row["cached_from"] == original["id"], row
                assert starts(query.store.history(row["id"])) == 0
            else:
                assert row["cached_from"] is None
                assert starts(query.store.history(row["id"])) == 1
        assert succeeded >= 1
        assert f"{succeeded} answered from the cache (no run)" in out, out
    finally:
        query.store.close()
    again = run_search(tmp_path, site, "--budget", str(budget), "--seed", "7",
                       "--campaign", "replay")
    assert "came from the store without a run" in again, again
    assert f"({succeeded} of them from the cache)" in again, again
