"""Wall-time-aware claiming, the launcher's side: the kinds of tasks expected to outlast its
remaining wall time are named in its log once per kind (its claims pass over them)."""

from __future__ import annotations

import logging
import os

import pytest

from balsam_futures.backends import ClaimOffer, LauncherInfo, open_store
from balsam_futures.launcher.config import LauncherConfig
from balsam_futures.launcher.nodes import NodeSpec
from balsam_futures.launcher.placement import Placer
from balsam_futures.tasks import TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(30)


def test_too_long_kinds_are_logged_once_each_and_not_claimed(tmp_path, caplog):
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    lid = store.register_launcher(LauncherInfo(hostname="h", pid=os.getpid()))
    specs = [TaskSpec("python", b"p", TaskOptions(timeout=t), name)
             for name, t in [("big", 3600.0), ("big", 3600.0), ("huge", 7200.0),
                             ("small", 30.0)]]
    ids = store.create_tasks(specs)
    claimed = store.exchange(lid, [], [], 10, ClaimOffer(max_wall_s=600.0)).claimed
    assert [t.id for t in claimed] == [ids[3]]
    placer = Placer([NodeSpec("localhost", 2, ())], LauncherConfig(num_workers=2),
                    head_nodes={0}, mpi_launcher="mpich")
    with caplog.at_level(logging.INFO, logger="balsam_futures.launcher.placement"):
        placer.warn_too_long(store, {}, 600.0)
        placer.warn_too_long(store, {}, 500.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "not starting 2 task(s) of kind 'big': expected to run 3600 s" in lines[0]
    assert "kind 'huge'" in lines[1] and "600 s of wall time left" in lines[1]
    store.close()
