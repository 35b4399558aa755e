"""The launcher's transfer thread (launcher/stager.py) against a real SQLite store, with the
transfers replaced by a recorder: what it claims, the items it builds, the moves it writes,
and that a fenced launcher's thread stops."""

from __future__ import annotations

import os
import threading

import pytest
from clocks import FakeClock

from balsam_futures.backends import LauncherInfo, open_store
from balsam_futures.launcher.stager import Stager
from balsam_futures.serialization import load_exception
from balsam_futures.staging import TaskTransferReport
from balsam_futures.tasks import TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(30)


class RecordingTransfers:
    """Stands in for staging.Transfers: records the items, fails the tasks named."""

    def __init__(self, fail: dict[int, str] | None = None) -> None:
        self.fail = fail or {}
        self.items: list = []

    def run(self, items):
        self.items += items
        reports = {}
        for item in items:
            report = reports.setdefault(item.task_id, TaskTransferReport(item.task_id))
            if item.task_id in self.fail:
                report.error = self.fail[item.task_id]
            else:
                report.copied += 1
        return reports


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'balsam.db'}")
    yield s
    s.close()


def staged(name: str, src: str) -> TaskSpec:
    return TaskSpec("python", b"p", TaskOptions(stage_in=[(src, "in/")]), name=name)


def test_one_pass_fetches_every_waiting_task_in_one_batch(store, tmp_path):
    lid = store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid(), lease_s=1e6))
    ids = store.create_tasks([staged("a", "/srv/x.dat"), staged("b", "http://h/y.dat")])
    transfers = RecordingTransfers(fail={ids[1]: "http://h/y.dat: HTTP 404 Not Found"})
    stager = Stager(store, lid, site=str(tmp_path / "site"), transfers=transfers)
    assert stager.pass_once()
    assert {i.task_id for i in transfers.items} == set(ids)  # one Transfers.run for both
    dest = {i.task_id: i.destination for i in transfers.items}
    assert dest[ids[0]] == str(tmp_path / "site" / "data" / "default" / f"a_{ids[0]}" / "in"
                               / "x.dat")
    ok, bad = store.get_tasks(ids)
    assert ok["state"] == "READY" and bad["state"] == "FAILED"
    err = load_exception(bad["error"], ids[1])
    assert "stage_in failed: http://h/y.dat: HTTP 404 Not Found" in str(err)
    assert not stager.pass_once() and not stager.busy  # nothing left


def test_a_fenced_transfer_thread_stops_and_says_so(store, tmp_path):
    store.clock = clock = FakeClock()
    lid = store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid(), lease_s=5))
    store.create_tasks([staged("a", "/srv/x.dat")])
    clock.advance(60)
    fenced = threading.Event()
    stager = Stager(store, lid, site=str(tmp_path), transfers=RecordingTransfers(),
                    on_fenced=fenced.set)
    stager.run()  # returns: it does not go on after its launcher was fenced
    assert fenced.is_set()


def test_it_takes_only_the_tasks_its_launcher_serves(store, tmp_path):
    """The launcher's --tag filter, with several values for a key (either matches)."""
    lid = store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid(), lease_s=1e6))
    specs = [TaskSpec("python", b"p", TaskOptions(stage_in=[("/srv/x.dat", "x.dat")],
                                                  tags={"exp": exp}), name=exp)
             for exp in ("a", "b", "c")]
    ids = store.create_tasks(specs)
    transfers = RecordingTransfers()
    stager = Stager(store, lid, site=str(tmp_path), tags={"exp": ("a", "b")},
                    transfers=transfers)
    assert stager.pass_once()
    assert sorted(i.task_id for i in transfers.items) == ids[:2]
    assert store.get_tasks([ids[2]])[0]["state"] == "AWAITING_STAGE_IN"
