"""benchmarks/packing_live.py on the first tasks of two campaigns, with runs scaled to a
fraction of a second: the harness works end to end (a real simulated launcher, a real master,
the closed loop's resubmission), and every run is accounted for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(170)


def test_packing_through_a_simulated_launcher(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "packing_live.py"), "--only", "gpu-search",
         "--only", "closed-loop", "--limit", "120", "--time-scale", "0.002",
         "--json", str(out), "--dir", str(tmp_path / "sites")],
        capture_output=True, text=True, timeout=160, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {f["campaign"]: f for f in json.loads(out.read_text())}
    assert set(figures) == {"gpu-search", "closed-loop"}
    for f in figures.values():
        assert f["tasks"] == f["runs"] == 120 and f["failed"] == 0, f
        # The lower bound never exceeds a makespan measured on the real clock.
        assert 0 < f["live"] <= 1.0 and 0 < f["model"] <= 1.0, f
    assert "closed-loop" in proc.stdout and "launcher" in proc.stdout
