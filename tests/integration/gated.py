"""Task functions that wait on a gate file, shared by the integration suites.

A task blocks until the test creates its gate (``conftest.Gate``), polling every POLL_S for at
most GATE_BOUND_S; then it raises GateNeverOpened, so a broken test fails instead of hanging.
Workers import these by reference, so they live in a module of their own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

GATE_BOUND_S = 30.0
POLL_S = 0.005


class GateNeverOpened(RuntimeError):
    pass


def wait_for_gate(gate, value=None):
    deadline = time.monotonic() + GATE_BOUND_S
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise GateNeverOpened(gate)
        time.sleep(POLL_S)
    return value


def signal_then_wait_for_gate(started, gate, value=None):
    Path(started).touch()
    return wait_for_gate(gate, value)
