"""The executor's handle on a forked launcher (launcher/fork.py): poll, wait, kill."""

from __future__ import annotations

import os
import signal

import pytest

from balsam_futures.launcher.fork import ForkedLauncher

pytestmark = pytest.mark.timeout(30)


def _child_reading(pipe_r: int, pipe_w: int) -> int:
    """A forked child that exits with the byte it reads (or 7 at end of input)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.close(pipe_w)
            data = os.read(pipe_r, 1)
        finally:
            os._exit(data[0] if data else 7)
    os.close(pipe_r)
    return pid


def test_poll_and_wait_report_the_exit_code():
    r, w = os.pipe()
    child = ForkedLauncher(_child_reading(r, w))
    assert child.poll() is None
    assert child.wait(0.05) is None  # still running: no code yet
    os.write(w, b"\x03")
    os.close(w)
    assert child.wait(10) == 3
    assert child.poll() == 3


def test_kill_ends_it_with_sigkill():
    r, w = os.pipe()
    child = ForkedLauncher(_child_reading(r, w))
    try:
        child.kill()
        assert child.wait(10) == -signal.SIGKILL
        child.kill()  # once exited, a no-op
    finally:
        os.close(w)


def test_a_child_reaped_by_someone_else_is_seen_exited():
    r, w = os.pipe()
    child = ForkedLauncher(_child_reading(r, w))
    os.close(w)
    os.waitpid(child.pid, 0)  # a SIGCHLD handler of the user's, say
    assert child.wait(10) == 255  # exited, with a code nobody can know now
