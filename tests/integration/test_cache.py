"""Memoization (cache=): a call that succeeded before is answered from the store, an
identical call in flight is followed (one run for both), on both backends.

Whether a task ran is read from the store: its history has a RUNNING row per run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
from gated import wait_for_gate

from balsam_futures.errors import CacheKeyError

pytestmark = pytest.mark.timeout(120)
RESULT_S = 60


def square(x):
    return x * x


def fail_once(marker, x):
    """Fails the first time (no marker file yet), succeeds after."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first try fails")
    return x


def make_scaler(k):
    def scale(x):
        return x * k
    return scale


@pytest.fixture(params=["sqlite", "postgres"])
def cached_executor(request, site_dir, make_executor):
    """A factory of executors on one store (SQLite in the site, or a PostgreSQL database),
    all with cache=True."""
    db_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None

    def factory(**kwargs):
        kwargs.setdefault("cache", True)
        return make_executor(db_url=db_url, **kwargs)
    factory.db_url = db_url
    return factory


def runs(ex, fut) -> int:
    return sum(h["to_state"] == "RUNNING" for h in ex.store.history(fut.task_id))


def row(ex, fut) -> dict:
    return ex.tasks().get(fut.task_id)


def test_a_repeated_call_is_answered_from_the_store_without_a_run(cached_executor):
    ex = cached_executor()
    first = ex.submit(square, 7)
    assert first.result(timeout=RESULT_S) == 49
    again = ex.submit(square, 7)
    assert again.result(timeout=RESULT_S) == 49
    assert (runs(ex, first), runs(ex, again)) == (1, 0)
    hit = row(ex, again)
    assert hit["cached_from"] == first.task_id
    assert hit["cache_key"] == row(ex, first)["cache_key"] and len(hit["cache_key"]) == 64
    assert [h["to_state"] for h in ex.store.history(again.task_id)] == ["JOB_FINISHED"]
    assert ex.store.cache_counts() == {"hits": 1, "following": 0, "misses": 1}


def test_a_changed_argument_closure_value_or_body_is_a_miss(cached_executor):
    ex = cached_executor()
    assert ex.submit(square, 2).result(timeout=RESULT_S) == 4
    other = ex.submit(square, 3)
    assert other.result(timeout=RESULT_S) == 9 and runs(ex, other) == 1
    by_two, by_three = make_scaler(2), make_scaler(3)
    assert ex.submit(by_two, 5).result(timeout=RESULT_S) == 10
    assert ex.submit(by_three, 5).result(timeout=RESULT_S) == 15  # not 10 from the cache
    hit = ex.submit(make_scaler(2), 5)
    assert hit.result(timeout=RESULT_S) == 10 and runs(ex, hit) == 0
    # Two bodies of one function name, as if the script had been edited between two runs.
    fns = []
    for body in ("x + 1", "x + 2"):
        namespace = {"__name__": "__main__"}
        exec(f"def edited(x):\n    return {body}\n", namespace)
        fns.append(namespace["edited"])
    assert [ex.submit(fn, 1).result(timeout=RESULT_S) for fn in fns] == [2, 3]
    assert ex.store.cache_counts()["hits"] == 1


def test_an_identical_call_in_flight_is_followed_one_run_for_both(cached_executor, gate):
    ex = cached_executor()
    leader = ex.submit(wait_for_gate, gate.path, "done")
    follower = ex.submit(wait_for_gate, gate.path, "done")
    assert follower.task_id is not None  # stored
    assert row(ex, follower)["state"] == "AWAITING_PARENTS"
    assert row(ex, follower)["cached_from"] == leader.task_id
    gate.open()
    assert follower.result(timeout=RESULT_S) == "done"
    assert leader.result(timeout=RESULT_S) == "done"
    assert (runs(ex, leader), runs(ex, follower)) == (1, 0)


def test_only_successes_are_reused_and_a_follower_runs_if_its_leader_fails(cached_executor,
                                                                          tmp_path):
    ex = cached_executor()
    marker = str(tmp_path / "marker")
    leader = ex.submit(fail_once, marker, 5)
    follower = ex.submit(fail_once, marker, 5)  # in the same batch or right after: follows
    with pytest.raises(RuntimeError, match="first try fails"):
        leader.result(timeout=RESULT_S)
    # The follower did not take the failure: it ran itself, and succeeded.
    assert follower.result(timeout=RESULT_S) == 5
    assert runs(ex, follower) == 1
    # It answers the next identical call, not the failed leader.
    later = ex.submit(fail_once, marker, 5)
    assert later.result(timeout=RESULT_S) == 5
    assert row(ex, later)["cached_from"] == follower.task_id and runs(ex, later) == 0


def test_refresh_runs_again_and_its_result_is_reused_next(cached_executor):
    ex = cached_executor()
    first = ex.submit(square, 4)
    first.result(timeout=RESULT_S)
    fresh = ex.options(cache="refresh").submit(square, 4)
    assert fresh.result(timeout=RESULT_S) == 16 and runs(ex, fresh) == 1
    after = ex.submit(square, 4)
    assert after.result(timeout=RESULT_S) == 16
    assert row(ex, after)["cached_from"] == fresh.task_id


def test_without_cache_the_same_call_runs_twice(cached_executor):
    ex = cached_executor(cache=False)
    a, b = ex.submit(square, 6), ex.submit(square, 6)
    assert a.result(timeout=RESULT_S) == b.result(timeout=RESULT_S) == 36
    assert runs(ex, a) == runs(ex, b) == 1 and row(ex, b)["cache_key"] is None


def test_an_argument_that_cannot_be_hashed_stably_is_refused_at_submit(cached_executor):
    ex = cached_executor()
    with pytest.raises(CacheKeyError, match="argument"):
        ex.submit(square, threading.Lock())
    with pytest.raises(CacheKeyError):
        ex.submit(square, (x for x in range(3)))
    assert ex.submit(square, 8).result(timeout=RESULT_S) == 64  # the executor goes on
    assert ex.tasks().count() == 1


def test_a_future_argument_uses_its_task_key(cached_executor):
    ex = cached_executor()
    parent = ex.submit(square, 3)
    child = ex.submit(square, parent)
    assert child.result(timeout=RESULT_S) == 81
    again = ex.submit(square, ex.submit(square, 3))
    assert again.result(timeout=RESULT_S) == 81 and runs(ex, again) == 0
    plain = ex.options(cache=False).submit(square, 3)
    with pytest.raises(CacheKeyError, match="not submitted with cache"):
        ex.submit(square, plain)


SCRIPT = textwrap.dedent("""
    import sys
    from balsam_futures import BalsamExecutor

    def objective(x):
        return {"x": x, "value": x ** 2 + BODY}

    if __name__ == "__main__":
        with BalsamExecutor(max_workers=1, site=sys.argv[1], db_url=sys.argv[2] or None,
                            cache=True) as ex:
            fut = ex.submit(objective, {3, 1, 2}.__len__() + 1)
            print(fut.result()["value"], fut.task_id)
""")


def test_a_restarted_master_gets_the_result_from_the_cache(cached_executor, tmp_path,
                                                            site_dir):
    """Two runs of a script (each its own interpreter, with other string hashes): the
    second is answered from the first's result; an edited body runs again."""
    db_url = cached_executor.db_url or ""

    def master(body: str, seed: str) -> tuple[int, int]:
        script = tmp_path / "master.py"
        script.write_text(SCRIPT.replace("BODY", body))
        try:
            out = subprocess.run([sys.executable, str(script), str(site_dir), db_url],
                                 capture_output=True, text=True, timeout=90,
                                 env={**os.environ, "PYTHONHASHSEED": seed,
                                      "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired as exc:
            # Seen once in a full run on PostgreSQL and not since: keep what it said.
            logs = "".join(f"\n== {p.name}\n" + p.read_text()[-4000:]
                           for p in sorted((site_dir / "logs").glob("*.log")))
            pytest.fail(f"the master hung: stdout {exc.stdout!r}, stderr {exc.stderr!r}{logs}")
        assert out.returncode == 0, out.stderr
        value, task_id = out.stdout.split()
        return int(value), int(task_id)

    value, first = master("0", "1")
    again_value, again = master("0", "2")
    assert (value, again_value) == (16, 16)
    edited_value, edited = master("1", "3")
    assert edited_value == 17
    ex = cached_executor()
    assert ex.tasks().get(again)["cached_from"] == first
    assert ex.tasks().get(edited)["cached_from"] is None
    assert ex.store.cache_counts() == {"hits": 1, "following": 0, "misses": 2}


def test_map_with_cache_answers_a_repeated_map_from_the_store(cached_executor):
    ex = cached_executor()
    assert list(ex.map(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
    before = ex.tasks().count()
    assert list(ex.map(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
    again = ex.tasks().filter(id__gt=before).rows()
    assert len(again) == 3 and all(r["cached_from"] is not None for r in again)
    assert list(ex.map(square, [7])) == [49]  # another chunking, another call


def test_a_shell_app_is_keyed_by_its_template_parameters_and_input_contents(cached_executor,
                                                                            tmp_path):
    from balsam_futures import ShellApp

    ex = cached_executor()
    data = tmp_path / "data.txt"
    data.write_text("one two")
    count = ShellApp("wc -w < data.txt > n.txt; cat n.txt", name="count", inputs=[str(data)])
    first = ex.submit(count)
    assert first.result(timeout=RESULT_S).return_code == 0
    hit = ex.submit(count)
    hit.result(timeout=RESULT_S)
    assert runs(ex, hit) == 0 and row(ex, hit)["cached_from"] == first.task_id
    data.write_text("one two three")  # the same command, another input: runs again
    changed = ex.submit(count)
    assert changed.result(timeout=RESULT_S).tail(1).strip() == "3"
    assert runs(ex, changed) == 1
    other = ShellApp("wc -w < data.txt > n.txt; cat n.txt; true", name="count",
                     inputs=[str(data)])
    edited = ex.submit(other)  # another template: another call
    assert edited.result(timeout=RESULT_S).return_code == 0 and runs(ex, edited) == 1
    assert row(ex, edited)["cache_key"] != row(ex, changed)["cache_key"]
