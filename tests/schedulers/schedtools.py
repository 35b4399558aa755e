"""Helpers of the scheduler tests (plain functions; fixtures are in conftest.py)."""

from __future__ import annotations

import os
import select
import time


def cli(*args, env=None) -> tuple[int, str]:
    """Run ``balsam-futures ARGS`` in process; returns its exit code and output."""
    from click.testing import CliRunner

    from balsam_futures.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def wait_pid_exit(pid: int, timeout: float = 30.0) -> None:
    """Block until process ``pid`` (not necessarily our child) exits: a pidfd becomes
    readable then (Linux 5.3+)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still runs after {timeout} s"
    finally:
        os.close(fd)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Poll ``predicate`` (a scheduler's view, which has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(interval)
