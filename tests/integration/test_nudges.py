"""The nudges between an executor and its own launcher (launcher/child.py): bytes that say
"look at the store now", never data, and never mistaken for the stop that closing the
launcher's standard input means."""

from __future__ import annotations

import os
import select

import pytest

from balsam_futures import BalsamExecutor
from balsam_futures.launcher.config import LauncherConfig
from balsam_futures.launcher.pilot import Pilot

pytestmark = pytest.mark.timeout(60)


def double(x):
    return 2 * x


def test_a_launcher_tells_its_executor_and_survives_the_executor_leaving():
    pilot = Pilot("sqlite://", LauncherConfig(num_workers=1))
    r, w = os.pipe()
    os.set_blocking(w, False)
    pilot.executor_fd = w
    pilot.tell_executor()
    assert select.select([r], [], [], 5)[0] == [r]
    assert os.read(r, 16) == b"!"
    for _ in range(100_000):  # a full pipe is not an error: a nudge is pending already
        pilot.tell_executor()
    os.close(r)  # the executor is gone
    pilot.tell_executor()
    assert pilot.executor_fd is None
    os.close(w)


def test_nudges_on_the_control_pipe_do_not_stop_the_launcher(site_dir):
    with BalsamExecutor(max_workers=1, site=site_dir) as ex:
        assert ex.submit(double, 1).result(timeout=30) == 2
        launcher = ex._launcher
        for _ in range(1000):
            launcher.nudge()
        assert ex.submit(double, 2).result(timeout=30) == 4
        assert launcher.alive()
    # Stopped: nudging is a no-op, and the news pipe says EOF (the watcher stops waiting
    # on it) and is closed once.
    launcher.nudge()
    assert launcher.news_fd == -1 or launcher.read_news() is False
    launcher.close_news()
    launcher.close_news()
