"""Gates: files a blocked task polls for, so tests release tasks with an event, not a sleep."""

from __future__ import annotations

from pathlib import Path

import pytest


class Gate:
    def __init__(self, path):
        self.path = str(path)

    def open(self):
        Path(self.path).touch()

    def __repr__(self):
        return f"Gate({self.path!r})"


@pytest.fixture
def new_gate(tmp_path, make_executor):
    # Requesting make_executor makes this fixture tear down *before* the executors are shut
    # down (shutdown(wait=True) would otherwise wait for tasks still blocked on a gate).
    made = []

    def factory(name="gate"):
        gate = Gate(tmp_path / f"{name}-{len(made)}")
        made.append(gate)
        return gate

    yield factory
    for gate in made:
        gate.open()


@pytest.fixture
def gate(new_gate):
    return new_gate("gate")
