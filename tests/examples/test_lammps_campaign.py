"""examples/lammps_campaign: a sweep of real LAMMPS runs on 2 MPI ranks each.

The campaign test runs the real script in a subprocess on its own SQLite site (4 runs: two
initial temperatures x two densities, a small box), then checks the numbers parsed from each
run's job.out against physics and the store against the sweep.  It is skipped, with the
reason, where LAMMPS or its MPI launcher is not installed (CI installs Debian's lammps).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lammps_campaign"
SCRIPT = EXAMPLE / "campaign.py"
TEMPERATURES = (1.5, 3.0)
DENSITIES = (0.8442, 0.95)
RANKS = 2
CELLS = 6  # 4 x 6^3 = 864 atoms: under a second per run on 2 ranks
STEPS = 200


def _load_melt():
    spec = importlib.util.spec_from_file_location("lammps_campaign_melt", EXAMPLE / "melt.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


melt = _load_melt()

# The end of a real run's output (LAMMPS 29 Sep 2021, 2 ranks), trimmed.
SAMPLE = """\
LAMMPS (29 Sep 2021 - Update 2)
  using 1 OpenMP thread(s) per MPI task
  1 by 1 by 2 MPI processor grid
Created 864 atoms
Step Temp PotEng KinEng TotEng Press
       0          1.5   -6.7733681    2.2473958   -4.5259723   -5.0386416
     200   0.78026632   -5.7052416    1.1691378   -4.5361038   0.52634731
Loop time of 0.213 on 2 procs for 200 steps with 864 atoms

Performance: 405633.803 tau/day, 938.967 timesteps/s
99.1% CPU use with 2 MPI tasks x 1 OpenMP threads
"""


def test_parse_run_reads_thermo_ranks_and_atoms():
    run = melt.parse_run(SAMPLE)
    assert run["initial"]["temp"] == 1.5
    assert run["final"] == {"step": 200.0, "temp": 0.78026632, "poteng": -5.7052416,
                            "kineng": 1.1691378, "toteng": -4.5361038, "press": 0.52634731}
    assert (run["ranks"], run["mpi_tasks"], run["atoms"], run["steps"]) == (2, 2, 864, 200)
    assert run["processor_grid"] == (1, 1, 2)
    assert run["lammps_version"] == "29 Sep 2021 - Update 2"


@pytest.mark.parametrize("text, message", [
    ("ERROR: Unknown command: lattic fcc 0.8 (src/input.cpp:232)\n", "no thermo header"),
    (SAMPLE.split("Loop time")[0], "did not finish"),
    ("Step Temp PotEng\nERROR on proc 0: Lost atoms: original 864 current 863\n", "no rows"),
], ids=["not-lammps-output", "unfinished-run", "no-thermo-rows"])
def test_parse_run_refuses_incomplete_output(text, message):
    with pytest.raises(melt.ThermoParseError, match=message):
        melt.parse_run(text)


def test_script_skips_cleanly_without_lammps(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--site", str(tmp_path / "site"),
                           "--lmp", str(tmp_path / "no-such-lmp")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped:" in proc.stderr and "no-such-lmp is not on PATH" in proc.stderr
    assert not (tmp_path / "site").exists()  # nothing was started


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_campaign_runs_lammps_on_two_ranks_and_parses_physical_numbers(tmp_path):
    try:
        lammps = melt.find_lammps()
    except melt.LammpsNotFound as exc:
        pytest.skip(f"LAMMPS is not available here: {exc}")
    site, out = tmp_path / "site", tmp_path / "runs.json"
    argv = [sys.executable, str(SCRIPT), "--site", str(site), "--json", str(out),
            "--temperatures", ",".join(map(str, TEMPERATURES)),
            "--densities", ",".join(map(str, DENSITIES)),
            "--ranks", str(RANKS), "--cells", str(CELLS), "--steps", str(STEPS),
            "--workers", "2"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 run(s) finished, 0 failed" in proc.stdout, proc.stdout
    report = json.loads(out.read_text())
    assert report["lammps"]["mpi"] == lammps.mpi
    runs = {(r["temperature"], r["density"]): r for r in report["runs"]}
    assert sorted(runs) == sorted((t, d) for t in TEMPERATURES for d in DENSITIES)

    for (t0, _rho), r in runs.items():
        # Each run really used 2 MPI ranks: LAMMPS says so, and split its box between them.
        assert (r["ranks"], r["mpi_tasks"]) == (RANKS, RANKS), r
        assert math.prod(r["processor_grid"]) == RANKS, r
        job_out = (Path(r["workdir"]) / "job.out").read_text()
        assert f"on {RANKS} procs for {STEPS} steps with {4 * CELLS**3} atoms" in job_out
        assert f"{RANKS} MPI tasks x 1 OpenMP threads" in job_out
        assert r["atoms"] == 4 * CELLS**3 and r["final"]["step"] == STEPS
        # Physics of an NVE melt from a perfect fcc lattice: about half the initial kinetic
        # energy goes into potential energy (the original example: 3.0 -> 1.66), total energy
        # is conserved, and a dense LJ liquid at these temperatures has negative energy.
        assert 0.35 * t0 < r["final_temp"] < 0.75 * t0, r
        assert r["energy_drift"] < 0.05, r
        assert -8.0 < r["final_etotal"] < 0.0, r
        assert math.isfinite(r["final_press"]), r
        assert r["run_s"] is not None and 0 < r["run_s"] < 120, r
    for t0 in TEMPERATURES:  # denser is under higher pressure at the same temperature
        assert runs[(t0, DENSITIES[1])]["final_press"] > runs[(t0, DENSITIES[0])]["final_press"]
    for rho in DENSITIES:  # hotter stays hotter
        assert runs[(TEMPERATURES[1], rho)]["final_temp"] > runs[(TEMPERATURES[0], rho)][
            "final_temp"]

    # The store agrees: four finished tasks of the campaign, one directory each.
    from balsam_futures.backends import open_store

    store = open_store(f"sqlite:///{site / 'balsam.db'}")
    try:
        assert store.count_by_state() == {"JOB_FINISHED": 4}
        assert sorted(store.task_ids({"workflow": "lammps-melt"})) == sorted(
            r["task_id"] for r in runs.values())
    finally:
        store.close()
    per_run = ", ".join(f"T={t:g} rho={d:g}: {r['run_s']:.2f} s" for (t, d), r in
                        sorted(runs.items()))
    print(f"per-run time (claimed to done): {per_run}")
