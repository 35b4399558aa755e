"""Helpers for tests that watch processes and files appear or go away."""

from __future__ import annotations

import os
import time


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False  # gone, also between the two looks (reading its stat then fails)


def wait_for_file(path, timeout: float = 30.0) -> None:
    """Poll every 5 ms until ``path`` exists (a task's signal that it got somewhere)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)
