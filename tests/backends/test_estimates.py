"""Run-time estimates and the claim order that uses them, on every backend: estimates learned
from finished runs, the claim order (within a priority the widest runs first, then longest
expected first, unknown last, then submission order), the starvation guard, wall-time-aware
claims, and the upgrades to schema versions 4 and 6."""

from __future__ import annotations

import os

import pytest
from clocks import FakeClock
from old_schemas import rewind
from sqlalchemy import text

from balsam_futures.backends import ClaimOffer, LauncherInfo, SqlStore, TaskOutcome, open_store
from balsam_futures.backends.estimates import (
    claim_order_key,
    moved,
    quantile,
    updated_window,
)
from balsam_futures.backends.migrations import SCHEMA_VERSION
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = pytest.mark.timeout(60)

S = TaskState


def spec(name: str, **options) -> TaskSpec:
    return TaskSpec(kind="python", payload=b"p", options=TaskOptions(**options), name=name)


def launcher(store: SqlStore) -> int:
    # A long lease: the starvation test moves the clock past the default one.
    return store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid(), lease_s=1e6))


def done(task_id: int, seconds: float, start: float = 1000.0) -> TaskOutcome:
    return TaskOutcome(task_id, outcome_path(S.RUN_DONE, 0, 0, True), result=b"r",
                       run={"hosts": ["n0"], "gpus": [[]], "cores": 1, "share": 1.0,
                            "started_at": start, "ended_at": start + seconds})


def run_all(store: SqlStore, lid: int, names_seconds: list[tuple[str, float]], **opts) -> None:
    """Submit, claim and finish one task per (name, seconds)."""
    ids = store.create_tasks([spec(n, **opts) for n, _ in names_seconds])
    claimed = store.exchange(lid, [], [], len(ids)).claimed
    assert sorted(t.id for t in claimed) == sorted(ids)
    store.exchange(lid, ids, [done(i, s) for i, (_, s) in zip(ids, names_seconds)], 0)


def claim_order(store: SqlStore, lid: int, n: int, **offer) -> list[int]:
    return [t.id for t in store.exchange(lid, [], [], n, ClaimOffer(**offer)).claimed]


# -- the estimator ---------------------------------------------------------------------------


def test_quantiles_and_window():
    assert quantile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert quantile([0.0, 10.0], 0.9) == pytest.approx(9.0)
    assert updated_window([1.0] * 64, [2.0]) == [1.0] * 63 + [2.0]
    assert moved(None, 5.0) and moved(10.0, 20.0)
    assert not moved(10.0, 12.0) and not moved(0.001, 0.5)


# -- estimates from history ------------------------------------------------------------------


def test_finished_runs_update_their_kinds_estimate(store):
    lid = launcher(store)
    run_all(store, lid, [("sim", 10.0), ("sim", 20.0), ("sim", 30.0), ("post", 1.0)])
    kinds = {k["key"]: k for k in store.kind_estimates()}
    assert kinds["sim"]["count"] == 3
    assert kinds["sim"]["median_s"] == pytest.approx(20.0)
    assert kinds["sim"]["p90_s"] == pytest.approx(28.0)
    assert kinds["post"]["count"] == 1
    run_all(store, lid, [("sim", 40.0)])
    assert {k["key"]: k for k in store.kind_estimates()}["sim"]["count"] == 4


def test_kind_option_overrides_the_name_and_failures_teach_nothing(store):
    lid = launcher(store)
    run_all(store, lid, [("a", 5.0), ("b", 7.0)], kind="shared")
    (tid,) = store.create_tasks([spec("c")])
    store.exchange(lid, [], [], 1)
    failed = TaskOutcome(tid, outcome_path(S.RUN_ERROR, 0, 0, True), error=b"e",
                         run={"hosts": ["n0"], "gpus": [[]], "cores": 1, "share": 1.0,
                              "started_at": 0.0, "ended_at": 99.0})
    store.exchange(lid, [tid], [failed], 0)
    assert [(k["key"], k["count"]) for k in store.kind_estimates()] == [("shared", 2)]


def test_kind_option_is_checked():
    with pytest.raises(ValueError, match="kind"):
        TaskOptions(kind="x" * 1000)


# -- claim order -----------------------------------------------------------------------------


def test_longest_expected_first_within_a_priority_unknown_last(store):
    lid = launcher(store)
    run_all(store, lid, [("long", 100.0), ("short", 2.0)])
    ids = store.create_tasks([spec("unknown"), spec("short"), spec("long"), spec("timed",
                              timeout=50.0), spec("unknown"), spec("urgent", priority=5)])
    unknown1, short, long_, timed, unknown2, urgent = ids
    assert claim_order(store, lid, 6) == [urgent, long_, timed, short, unknown1, unknown2]


def test_widest_first_within_a_priority_then_longest_expected(store):
    lid = launcher(store)
    wide = Resources(num_nodes=4)
    ids = store.create_tasks([
        spec("narrow", timeout=100.0), spec("wide short", timeout=5.0, resources=wide),
        spec("two unknown", resources=Resources(num_nodes=2)),
        spec("wide long", timeout=50.0, resources=wide), spec("urgent", priority=5)])
    narrow, wide_short, two_unknown, wide_long, urgent = ids
    assert claim_order(store, lid, 5) == [urgent, wide_long, wide_short, two_unknown, narrow]
    assert claim_order_key(0, 4, 5.0, 2) < claim_order_key(0, 1, 100.0, 1)
    assert claim_order_key(0, 4, 5.0, 2, by_submission=True) > claim_order_key(
        0, 1, 100.0, 1, by_submission=True)


def test_estimate_that_moves_refreshes_waiting_tasks(store):
    lid = launcher(store)
    run_all(store, lid, [("grow", 2.0)])
    waiting = store.create_tasks([spec("grow"), spec("other", timeout=10.0)])
    # Claimed and finished elsewhere in the meantime: the kind now takes 100 s.
    store.exchange(lid, [], [], 0)  # nothing claimed; the new tasks' estimates get filled
    (extra,) = store.create_tasks([spec("grow", priority=1)])
    assert claim_order(store, lid, 1) == [extra]
    store.exchange(lid, [extra], [done(extra, 100.0)], 0)
    assert claim_order(store, lid, 2) == waiting  # grow (p90 of 2, 100) > other (10)


def test_starvation_guard_claims_in_submission_order(make_store):
    store = make_store()
    clock = store.clock = FakeClock()
    store.starvation_s = 600.0
    lid = launcher(store)
    run_all(store, lid, [("long", 100.0)])
    old = store.create_tasks([spec("short", timeout=1.0)])
    clock.advance(601.0)
    new = store.create_tasks([spec("long")])
    assert claim_order(store, lid, 1) == old  # waited past the bound: submission order
    (again,) = store.create_tasks([spec("short", timeout=1.0)])
    assert claim_order(store, lid, 2) == [*new, again]  # nobody starving: longest first


def test_starvation_bound_is_validated(store, monkeypatch):
    with pytest.raises(ValueError, match="starvation_s"):
        store.starvation_s = 0
    monkeypatch.setenv("BALSAM_FUTURES_STARVATION_SECONDS", "-1")
    fresh = SqlStore.__new__(SqlStore)
    with pytest.raises(ValueError, match="BALSAM_FUTURES_STARVATION_SECONDS"):
        fresh.starvation_s  # noqa: B018 - the property reads the setting


# -- wall-time-aware claims ------------------------------------------------------------------


def test_claim_skips_tasks_expected_past_the_wall_time_left(store):
    lid = launcher(store)
    run_all(store, lid, [("hour", 3600.0)])
    hour, quick, unknown, capped = store.create_tasks([
        spec("hour"), spec("quick", timeout=60.0), spec("unknown"),
        spec("hour", kind="hour", timeout=7200.0)])
    assert sorted(claim_order(store, lid, 10, max_wall_s=600.0)) == [quick, unknown]
    assert store.too_long_tasks(600.0) == [("hour", 2, pytest.approx(3600.0))]
    assert sorted(claim_order(store, lid, 10)) == sorted([hour, capped])


# -- the claim stays flat as the backlog grows ----------------------------------------------


def test_claim_reads_the_order_index(store):
    """The claim's plan walks ix_bf_tasks_order (no sort of the backlog)."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("the plan check is SQLite's EXPLAIN QUERY PLAN")
    from sqlalchemy.dialects import sqlite

    from balsam_futures.backends import statements as q

    stmt = q.select_claimable(None).compile(dialect=sqlite.dialect(),
                                            compile_kwargs={"literal_binds": True})
    with store.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {stmt}".replace("FOR UPDATE SKIP LOCKED", "")))
    assert "ix_bf_tasks_order" in plan and "TEMP B-TREE" not in plan, plan


# -- schema versions 4 and 6 -----------------------------------------------------------------


def test_version_5_store_upgrades_to_the_widest_first_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    store.close()
    # Version 5's index: no width.
    rewind(tmp_path / "old.db", 5, "DROP INDEX ix_bf_tasks_order",
           "CREATE INDEX ix_bf_tasks_order ON bf_tasks (priority DESC, expected_s DESC, id) "
           "WHERE state IN ('READY', 'RESTART_READY')")
    upgraded = open_store(url, upgrade=True)
    assert upgraded.schema_version == SCHEMA_VERSION
    with upgraded.engine.connect() as conn:
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = "
                                "'ix_bf_tasks_order'")).scalar()
    assert "num_nodes DESC" in sql, sql
    lid = launcher(upgraded)
    narrow, wide = upgraded.create_tasks([spec("n", timeout=9.0),
                                          spec("w", resources=Resources(num_nodes=2))])
    assert claim_order(upgraded, lid, 2) == [wide, narrow]
    upgraded.close()


def test_version_3_store_upgrades_keeping_timeouts_as_expected_run_times(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    (tid,) = store.create_tasks([spec("t", timeout=30.0)])
    store.close()
    rewind(tmp_path / "old.db", 3, "DROP INDEX ix_bf_tasks_order", "DROP TABLE bf_kinds",
           "ALTER TABLE bf_tasks DROP COLUMN label", "ALTER TABLE bf_tasks DROP COLUMN expected_s",
           "DELETE FROM bf_meta WHERE key = 'estimated_through'")
    upgraded = open_store(url, upgrade=True)
    assert upgraded.schema_version == SCHEMA_VERSION
    with upgraded.engine.connect() as conn:
        assert conn.execute(text("SELECT expected_s FROM bf_tasks WHERE id = :i"),
                            {"i": tid}).scalar() == 30.0
        assert conn.execute(text("SELECT value FROM bf_meta WHERE key = "
                                 "'estimated_through'")).scalar() == str(tid)
    upgraded.close()


def test_stats_kinds_shows_the_estimates(backend, make_store, tmp_path, request):
    from click.testing import CliRunner

    from balsam_futures.cli import main

    store = make_store()
    run_all(store, launcher(store), [("sim", 10.0), ("sim", 30.0)])
    url = (f"sqlite:///{tmp_path / 'balsam.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    out = CliRunner().invoke(main, ["stats", "--kinds", "--db-url", str(url)])
    assert out.exit_code == 0, out.output
    assert "sim" in out.output and "20 s" in out.output and "28 s" in out.output
    out = CliRunner().invoke(main, ["stats", "--kinds", "--json", "--db-url", str(url)])
    assert '"count": 2' in out.output


def test_a_sub_second_kind_is_written_at_most_once_a_second(store):
    from balsam_futures.backends.estimates import SHORT_WRITE_S

    clock = store.clock = FakeClock()
    lid = launcher(store)
    run_all(store, lid, [("tiny", 0.01)])
    run_all(store, lid, [("tiny", 0.02), ("tiny", 0.03)])  # held: written a moment ago
    assert {k["key"]: k["count"] for k in store.kind_estimates()} == {"tiny": 1}
    clock.advance(SHORT_WRITE_S)
    run_all(store, lid, [("tiny", 0.04)])  # due: the held durations go with it
    assert {k["key"]: k["count"] for k in store.kind_estimates()} == {"tiny": 4}
    # A kind of seconds is written every time.
    run_all(store, lid, [("long", 5.0)])
    run_all(store, lid, [("long", 6.0)])
    assert {k["key"]: k["count"] for k in store.kind_estimates()}["long"] == 2


def test_sub_second_kinds_alone_are_not_filled_in(store):
    lid = launcher(store)
    run_all(store, lid, [("tiny", 0.01)])
    (tid,) = store.create_tasks([spec("tiny")])
    store.exchange(lid, [], [], 1)
    assert store.get_tasks([tid])[0]["expected_s"] == 0.0
    run_all(store, lid, [("long", 30.0)])  # now a kind worth filling in exists
    (later,) = store.create_tasks([spec("long")])
    store.exchange(lid, [], [], 1)
    assert store.get_tasks([later])[0]["expected_s"] == pytest.approx(30.0)
