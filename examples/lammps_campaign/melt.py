"""The LAMMPS melt application: find LAMMPS and its MPI, build the ShellApp, parse job.out.

The campaign script (``campaign.py``) submits this app once per point of a sweep.  This module
is imported by reference in the launcher's workers (the ``postprocess`` hook runs there), so
it imports only the standard library and balsam_futures.

    find_lammps()   lmp on PATH -> which MPI it is linked against (ldd) -> that MPI's mpirun
    melt_app(lmp)   ShellApp: "<lmp> -in in.melt -var T {temperature} ..." (the launcher starts
                    it on the task's ranks with the MPI launcher it is given)
    summarize()     the postprocess hook: job.out -> thermo (first and last row), ranks, atoms
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balsam_futures import ShellApp, ShellContext, ShellResult

HERE = Path(__file__).resolve().parent
INPUT = HERE / "in.melt"

#: MPI launchers to look for, per MPI library, most specific name first: Debian installs
#: Open MPI's as mpirun.openmpi and MPICH's as mpirun.mpich, and a plain ``mpirun`` on PATH
#: may be the other one (or the mpich wheel's, in a virtual environment).
MPIRUN_NAMES = {
    "openmpi": ("mpirun.openmpi", "orterun", "mpirun", "mpiexec"),
    "mpich": ("mpirun.mpich", "mpiexec.mpich", "mpiexec.hydra", "mpirun", "mpiexec"),
}
#: What ``<mpirun> --version`` prints, to accept a plain ``mpirun``.
MPIRUN_BANNER = {"openmpi": "Open MPI", "mpich": "HYDRA"}

#: Open MPI refuses to run as root without both variables
#: (https://www.open-mpi.org/doc/v4.1/man1/mpirun.1.php, "Running as root").
#: ``rmaps_base_oversubscribe`` is ``--oversubscribe``: a run may have more ranks than the
#: cores Open MPI counts.  ``mpi_yield_when_idle`` makes waiting ranks yield the CPU instead of
#: spinning, which matters when two runs share a small machine.  ``vader`` without
#: single-copy: CMA needs ptrace rights that containers often lack
#: (https://github.com/open-mpi/ompi/issues/4948).
OPENMPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_mpi_yield_when_idle": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


class LammpsNotFound(RuntimeError):
    """LAMMPS, or an MPI launcher matching it, is not installed here."""


@dataclass(frozen=True)
class Lammps:
    """An installed LAMMPS: its binary, the MPI it was built with, and that MPI's mpirun."""

    lmp: str
    mpi: str  # "openmpi" or "mpich"
    mpirun: str
    env: dict[str, str] = field(default_factory=dict, hash=False)


def mpi_of(lmp: str) -> str:
    """Which MPI library ``lmp`` is linked against, from ``ldd``."""
    try:
        out = subprocess.run(["ldd", lmp], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LammpsNotFound(f"cannot run ldd on {lmp}: {exc}") from exc
    # MPICH's library is libmpich.so.12 (and libmpi.so.12 beside it); Open MPI's libmpi.so.40.
    if "libmpich" in out:
        return "mpich"
    if re.search(r"libmpi\.so\.4\d", out) or "libopen-rte" in out or "libopen-pal" in out:
        return "openmpi"
    raise LammpsNotFound(f"{lmp} is not linked against Open MPI or MPICH (ldd shows no "
                         "libmpi); this campaign runs LAMMPS on several MPI ranks")


def _banner(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, **OPENMPI_ENV})
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def find_mpirun(mpi: str) -> str:
    for name in MPIRUN_NAMES[mpi]:
        exe = shutil.which(name)
        if exe is None:
            continue
        if "." in name or name == "orterun" or MPIRUN_BANNER[mpi] in _banner(exe):
            return exe
    raise LammpsNotFound(f"LAMMPS is built with {mpi}, but no {mpi} launcher is installed "
                         f"(looked for {', '.join(MPIRUN_NAMES[mpi])} on PATH)")


def find_lammps(lmp: str | None = None) -> Lammps:
    """The installed LAMMPS and the mpirun of its MPI; raises LammpsNotFound saying what is
    missing."""
    exe = shutil.which(lmp or "lmp")
    if exe is None:
        raise LammpsNotFound(f"{lmp or 'lmp'} is not on PATH: install LAMMPS (Debian: apt-get "
                             "install lammps) or pass --lmp PATH")
    mpi = mpi_of(exe)
    return Lammps(exe, mpi, find_mpirun(mpi), dict(OPENMPI_ENV) if mpi == "openmpi" else {})


def melt_app(lammps: Lammps) -> ShellApp:
    """The melt run as a ShellApp: parameters temperature, density, cells (box edge in
    lattice cells), steps and seed.  No mpirun here: submitted with
    ``Resources(ranks_per_node=N)``, the launcher starts it on N ranks with the MPI launcher
    of LAMMPS's MPI (``BalsamExecutor(mpi_launcher=lammps.mpi)``)."""
    command = (f"{shlex.quote(lammps.lmp)} -nocite -log none "
               "-in in.melt -var T {temperature} -var rho {density} -var cells {cells} "
               "-var steps {steps} -var seed {seed}")
    # One OpenMP thread per rank: the ranks are the parallelism here.
    return ShellApp(command, name="melt", inputs=[str(INPUT)],
                    env={**lammps.env, "OMP_NUM_THREADS": "1"}, postprocess=summarize)


# --------------------------------------------------------------------------------------------
# job.out -> numbers

_LOOP = re.compile(r"^Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms",
                   re.MULTILINE)
_TASKS = re.compile(r"(\d+) MPI tasks x (\d+) OpenMP threads")
_GRID = re.compile(r"^\s*(\d+) by (\d+) by (\d+) MPI processor grid", re.MULTILINE)
_VERSION = re.compile(r"^LAMMPS \((.*)\)", re.MULTILINE)


class ThermoParseError(ValueError):
    """job.out holds no complete thermo table (LAMMPS failed, or printed something else)."""


def parse_thermo(text: str) -> list[dict[str, float]]:
    """The rows of the last thermo table in LAMMPS output, as dicts keyed by column name
    (lower case: step, temp, poteng, kineng, toteng, press, ...)."""
    lines = text.splitlines()
    start = max((i for i, line in enumerate(lines) if line.split()[:1] == ["Step"]),
                default=None)
    if start is None:
        raise ThermoParseError("no thermo header (a line starting with 'Step') in the output")
    names = [n.lower() for n in lines[start].split()]
    rows = []
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) != len(names):
            break
        try:
            rows.append(dict(zip(names, map(float, cells))))
        except ValueError:
            break
    if not rows:
        raise ThermoParseError("the thermo table has no rows")
    return rows


def parse_run(text: str) -> dict[str, Any]:
    """Thermo (first and last rows) and how the run went: ranks, atoms, steps, loop time."""
    rows = parse_thermo(text)
    loop = _LOOP.search(text)
    if loop is None:
        raise ThermoParseError("no 'Loop time of ...' line: the run did not finish")
    out: dict[str, Any] = {
        "initial": rows[0],
        "final": rows[-1],
        "thermo_rows": len(rows),
        "loop_time_s": float(loop.group(1)),
        "ranks": int(loop.group(2)),
        "steps": int(loop.group(3)),
        "atoms": int(loop.group(4)),
    }
    tasks = _TASKS.search(text)
    if tasks:
        out["mpi_tasks"], out["omp_threads"] = int(tasks.group(1)), int(tasks.group(2))
    grid = _GRID.search(text)
    if grid:
        out["processor_grid"] = tuple(int(g) for g in grid.groups())
    version = _VERSION.search(text)
    if version:
        out["lammps_version"] = version.group(1)
    return out


def summarize(ctx: ShellContext, result: ShellResult) -> dict[str, Any]:
    """The postprocess hook (runs in the worker): the task's result is this dict."""
    run = parse_run(result.job_out.read_text(errors="replace"))
    final, initial = run["final"], run["initial"]
    e0 = initial["toteng"]
    return {
        **{k: ctx.params[k] for k in ("temperature", "density", "cells", "steps")},
        "final_temp": final["temp"],
        "final_press": final["press"],
        "final_etotal": final["toteng"],
        # NVE: the total energy should stay put; its relative drift says whether the time
        # step suits this temperature and density.
        "energy_drift": abs(final["toteng"] - e0) / abs(e0) if e0 else None,
        "workdir": str(result.workdir),
        **{k: v for k, v in run.items() if k not in ("steps",)},
    }
