"""Which launcher round trips wait for the disk at commit (PostgreSQL): those that carry
outcomes do; claims, starts and lease renewals alone do not (a crash of the server may forget
them, and the tasks then run again, as for a lost launcher; no result is lost)."""

from __future__ import annotations

import os

import pytest

from balsam_futures.backends import ClaimOffer, LauncherInfo, TaskOutcome
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = [pytest.mark.timeout(60), pytest.mark.postgres]


@pytest.fixture
def store(pg_url):
    from balsam_futures.backends import open_store

    s = open_store(pg_url)
    yield s
    s.close()


def synchronous_commit_of_each_trip(store, trips) -> list[str]:
    """Run ``trips`` (callables) and return, for each, the synchronous_commit the server
    applied to its transaction, read inside that transaction just before its commit."""
    seen: list[str] = []
    real = store._insert_history

    def spy(cur, rows):
        real(cur, rows)
        cur.execute("SHOW synchronous_commit")
        seen.append(cur.fetchone()[0])

    store._insert_history = spy
    try:
        for trip in trips:
            trip()
    finally:
        store._insert_history = real
    return seen


def test_only_round_trips_with_outcomes_wait_for_the_disk(store):
    lid = store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid(), lease_s=60))
    (tid,) = store.create_tasks([TaskSpec("python", b"p", TaskOptions(), name="t")])
    done = TaskOutcome(tid, outcome_path(TaskState.RUN_DONE, 0, 0, True), result=b"r")
    seen = synchronous_commit_of_each_trip(store, [
        lambda: store.exchange(lid, [], [], 1, ClaimOffer()),     # claim
        lambda: store.exchange(lid, [tid], [], 0, ClaimOffer()),  # start
        lambda: store.exchange(lid, [], [done], 1, ClaimOffer()),  # outcome (+ claim)
    ])
    assert seen == ["off", "off", "on"], seen
    # And the outcome is there, written by a transaction that waited for the disk.
    assert store.task_outcomes([tid])[0].state is TaskState.JOB_FINISHED
    # A later transaction on the same connection is back to the server's setting.
    with store._raw_read() as cur:
        cur.execute("SHOW synchronous_commit")
        assert cur.fetchone()[0] == "on"
