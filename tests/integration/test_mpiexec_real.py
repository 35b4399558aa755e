"""The MPICH command line, run for real with the hydra mpiexec from the ``mpich`` wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from balsam_futures.launcher.gpus import DEVICE_VARIABLES
from balsam_futures.launcher.mpi import RankLayout
from balsam_futures.launcher.mpi.mpich import MpichLauncher
from balsam_futures.launcher.mpi.rank_variables import LOCAL_RANK_VARIABLES

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(60)]

RANK_SCRIPT = """\
import json, os, sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
row = {"rank": comm.Get_rank(), "size": comm.Get_size(),
       "omp": os.environ.get("OMP_NUM_THREADS"), "tag": os.environ.get("TAG")}
with open(os.path.join(sys.argv[1], f"rank-{comm.Get_rank()}.json"), "w") as f:
    json.dump(row, f)
"""

DEVICE_SCRIPT = f"""\
import json, os, sys
names = {list(DEVICE_VARIABLES)!r}
row = dict(local=os.environ["MPI_LOCALRANKID"], **{{k: os.environ.get(k) for k in names}})
with open(os.path.join(sys.argv[1], "rank-" + os.environ["PMI_RANK"] + ".json"), "w") as f:
    json.dump(row, f)
"""


def find_mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the interpreter or on PATH (pip install mpich)")
    return found


def run(argv, env, out: Path):
    """Run argv; each rank writes one JSON file to ``out`` (hydra may interleave stdout lines)."""
    # The ranks must find their own local rank, not one inherited from an outer launcher.
    base = {k: v for k, v in os.environ.items() if k not in LOCAL_RANK_VARIABLES}
    proc = subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, f"{argv}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi4py_ranks_see_each_other(tmp_path, ranks):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    launcher = MpichLauncher(executable=find_mpiexec())
    layout = RankLayout(hosts=("localhost",), ranks_per_node=ranks, threads_per_rank=2)
    env = {**launcher.env(layout), "TAG": "hello world"}
    rows = run(launcher.argv(layout, [sys.executable, str(script), str(tmp_path)], env), env,
               tmp_path)
    assert sorted(r["rank"] for r in rows) == list(range(ranks))
    assert {r["size"] for r in rows} == {ranks}
    assert {r["omp"] for r in rows} == {"2"}
    assert {r["tag"] for r in rows} == {"hello world"}


def test_gpu_affinity_wrapper_gives_each_rank_its_own_id(tmp_path):
    script = tmp_path / "devices.py"
    script.write_text(DEVICE_SCRIPT)
    launcher = MpichLauncher(executable=find_mpiexec())
    layout = RankLayout(hosts=("localhost",), ranks_per_node=4, gpus_per_rank=1,
                        gpu_ids=(("g0", "g1", "g2", "g3"),))
    rows = run(launcher.argv(layout, [sys.executable, str(script), str(tmp_path)]), {}, tmp_path)
    assert len(rows) == 4
    for row in rows:
        expected = f"g{row['local']}"
        assert all(row[k] == expected for k in DEVICE_VARIABLES), row
