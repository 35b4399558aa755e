"""Exact command lines of every MPI launcher, layout validation, registry and detection."""

from __future__ import annotations

import pytest

from balsam_futures.launcher import gpus
from balsam_futures.launcher.mpi import RankLayout, detect_launcher, gpu_affinity, launcher_class
from balsam_futures.launcher.mpi.aprun import AprunLauncher
from balsam_futures.launcher.mpi.flux import FluxLauncher
from balsam_futures.launcher.mpi.mpich import MpichLauncher
from balsam_futures.launcher.mpi.openmpi import OpenMpiLauncher
from balsam_futures.launcher.mpi.pals import PalsLauncher
from balsam_futures.launcher.mpi.rank_variables import LOCAL_RANK_VARIABLES
from balsam_futures.launcher.mpi.srun import SrunLauncher

pytestmark = pytest.mark.timeout(30)

PY = "/py"
WRAP = [PY, "-m", "balsam_futures.launcher.mpi.gpu_affinity"]
CMD = ["./app", "--flag", "a b"]

ONE = RankLayout(hosts=("nid00001",), ranks_per_node=1)
TWO_BY_FOUR = RankLayout(hosts=("nid00012", "nid00013"), ranks_per_node=4)
THREADS = RankLayout(hosts=("nid00012", "nid00013"), ranks_per_node=2, threads_per_rank=4)
GPUS = RankLayout(hosts=("nid00012", "nid00013"), ranks_per_node=2, gpus_per_rank=1,
                  gpu_ids=(("0", "1"), ("2", "3")))
SAME_GPUS = RankLayout(hosts=("nid00012",), ranks_per_node=4, gpus_per_rank=1,
                       gpu_ids=(("0", "1", "2", "3"),))
ENV = {"A": "1", "B": "x y"}

H2 = "nid00012,nid00013"

LAUNCHERS = {
    "mpich": MpichLauncher(python=PY),
    "openmpi": OpenMpiLauncher(python=PY),
    "srun": SrunLauncher(),
    "aprun": AprunLauncher(python=PY),
    "pals": PalsLauncher(python=PY),
    "flux": FluxLauncher(),
}

# (launcher, case) -> expected argv; cases: one, two_by_four, threads, gpus, same_gpus, env.
EXPECTED = {
    ("mpich", "one"): ["mpiexec", "-n", "1", "-ppn", "1", "-hosts", "nid00001", *CMD],
    ("mpich", "two_by_four"): ["mpiexec", "-n", "8", "-ppn", "4", "-hosts", H2, *CMD],
    ("mpich", "threads"): ["mpiexec", "-n", "4", "-ppn", "2", "-hosts", H2, *CMD],
    ("mpich", "gpus"): ["mpiexec", "-n", "4", "-ppn", "2", "-hosts", H2, *WRAP, "--per-rank",
                        "1", "--ids", "nid00012=0,1", "--ids", "nid00013=2,3", "--", *CMD],
    ("mpich", "same_gpus"): ["mpiexec", "-n", "4", "-ppn", "4", "-hosts", "nid00012", *WRAP,
                             "--per-rank", "1", "--ids", "0,1,2,3", "--", *CMD],
    ("mpich", "env"): ["mpiexec", "-n", "8", "-ppn", "4", "-hosts", H2,
                       "-genv", "A", "1", "-genv", "B", "x y", *CMD],

    ("openmpi", "one"): ["mpirun", "-n", "1", "--map-by", "ppr:1:node", "--host", "nid00001:1",
                         "--bind-to", "none", *CMD],
    ("openmpi", "two_by_four"): ["mpirun", "-n", "8", "--map-by", "ppr:4:node", "--host",
                                 "nid00012:4,nid00013:4", "--bind-to", "none", *CMD],
    ("openmpi", "threads"): ["mpirun", "-n", "4", "--map-by", "ppr:2:node", "--host",
                             "nid00012:2,nid00013:2", "--bind-to", "none", *CMD],
    ("openmpi", "gpus"): ["mpirun", "-n", "4", "--map-by", "ppr:2:node", "--host",
                          "nid00012:2,nid00013:2", "--bind-to", "none", *WRAP, "--per-rank", "1",
                          "--ids", "nid00012=0,1", "--ids", "nid00013=2,3", "--", *CMD],
    ("openmpi", "same_gpus"): ["mpirun", "-n", "4", "--map-by", "ppr:4:node", "--host",
                               "nid00012:4", "--bind-to", "none", *WRAP, "--per-rank", "1",
                               "--ids", "0,1,2,3", "--", *CMD],
    ("openmpi", "env"): ["mpirun", "-n", "8", "--map-by", "ppr:4:node", "--host",
                         "nid00012:4,nid00013:4", "--bind-to", "none", "-x", "A=1", "-x", "B=x y",
                         *CMD],

    ("srun", "one"): ["srun", "-n", "1", "--ntasks-per-node", "1", "--nodes", "1", "--nodelist",
                      "nid00001", "--cpus-per-task", "1", "--overlap", *CMD],
    ("srun", "two_by_four"): ["srun", "-n", "8", "--ntasks-per-node", "4", "--nodes", "2",
                              "--nodelist", H2, "--cpus-per-task", "1", "--overlap", *CMD],
    ("srun", "threads"): ["srun", "-n", "4", "--ntasks-per-node", "2", "--nodes", "2",
                          "--nodelist", H2, "--cpus-per-task", "4", "--overlap", *CMD],
    ("srun", "gpus"): ["srun", "-n", "4", "--ntasks-per-node", "2", "--nodes", "2", "--nodelist",
                       H2, "--cpus-per-task", "1", "--overlap", "--gpus-per-task", "1", *CMD],
    ("srun", "same_gpus"): ["srun", "-n", "4", "--ntasks-per-node", "4", "--nodes", "1",
                            "--nodelist", "nid00012", "--cpus-per-task", "1", "--overlap",
                            "--gpus-per-task", "1", *CMD],
    ("srun", "env"): ["srun", "-n", "8", "--ntasks-per-node", "4", "--nodes", "2", "--nodelist",
                      H2, "--cpus-per-task", "1", "--overlap", "--export=ALL,A=1,B=x y", *CMD],

    ("aprun", "one"): ["aprun", "-n", "1", "-N", "1", "-d", "1", "-cc", "depth", "-L", "1", *CMD],
    ("aprun", "two_by_four"): ["aprun", "-n", "8", "-N", "4", "-d", "1", "-cc", "depth", "-L",
                               "12,13", *CMD],
    ("aprun", "threads"): ["aprun", "-n", "4", "-N", "2", "-d", "4", "-cc", "depth", "-L",
                           "12,13", *CMD],
    ("aprun", "gpus"): ["aprun", "-n", "4", "-N", "2", "-d", "1", "-cc", "depth", "-L", "12,13",
                        *WRAP, "--per-rank", "1", "--ids", "nid00012=0,1", "--ids",
                        "nid00013=2,3", "--", *CMD],
    ("aprun", "same_gpus"): ["aprun", "-n", "4", "-N", "4", "-d", "1", "-cc", "depth", "-L", "12",
                             *WRAP, "--per-rank", "1", "--ids", "0,1,2,3", "--", *CMD],
    ("aprun", "env"): ["aprun", "-n", "8", "-N", "4", "-d", "1", "-cc", "depth", "-L", "12,13",
                       "-e", "A=1", "-e", "B=x y", *CMD],

    ("pals", "one"): ["mpiexec", "-n", "1", "--ppn", "1", "--hosts", "nid00001", "--depth", "1",
                      "--cpu-bind", "depth", *CMD],
    ("pals", "two_by_four"): ["mpiexec", "-n", "8", "--ppn", "4", "--hosts", H2, "--depth", "1",
                              "--cpu-bind", "depth", *CMD],
    ("pals", "threads"): ["mpiexec", "-n", "4", "--ppn", "2", "--hosts", H2, "--depth", "4",
                          "--cpu-bind", "depth", *CMD],
    # Polaris order: local rank 0 gets the last id (ALCF set_affinity_gpu_polaris.sh).
    ("pals", "gpus"): ["mpiexec", "-n", "4", "--ppn", "2", "--hosts", H2, "--depth", "1",
                       "--cpu-bind", "depth", *WRAP, "--per-rank", "1", "--ids", "nid00012=1,0",
                       "--ids", "nid00013=3,2", "--", *CMD],
    ("pals", "same_gpus"): ["mpiexec", "-n", "4", "--ppn", "4", "--hosts", "nid00012", "--depth",
                            "1", "--cpu-bind", "depth", *WRAP, "--per-rank", "1", "--ids",
                            "3,2,1,0", "--", *CMD],
    ("pals", "env"): ["mpiexec", "-n", "8", "--ppn", "4", "--hosts", H2, "--depth", "1",
                      "--cpu-bind", "depth", "--env", "A=1", "--env", "B=x y", *CMD],

    ("flux", "one"): ["flux", "run", "-N", "1", "-n", "1", "-c", "1",
                      "--requires=hosts:nid00001", *CMD],
    ("flux", "two_by_four"): ["flux", "run", "-N", "2", "-n", "8", "-c", "1",
                              f"--requires=hosts:{H2}", *CMD],
    ("flux", "threads"): ["flux", "run", "-N", "2", "-n", "4", "-c", "4",
                          f"--requires=hosts:{H2}", *CMD],
    ("flux", "gpus"): ["flux", "run", "-N", "2", "-n", "4", "-c", "1", "-g", "1",
                       f"--requires=hosts:{H2}", *CMD],
    ("flux", "same_gpus"): ["flux", "run", "-N", "1", "-n", "4", "-c", "1", "-g", "1",
                            "--requires=hosts:nid00012", *CMD],
    ("flux", "env"): ["flux", "run", "-N", "2", "-n", "8", "-c", "1", f"--requires=hosts:{H2}",
                      "--env=A=1", "--env=B=x y", *CMD],
}

CASES = {
    "one": (ONE, None),
    "two_by_four": (TWO_BY_FOUR, None),
    "threads": (THREADS, None),
    "gpus": (GPUS, None),
    "same_gpus": (SAME_GPUS, None),
    "env": (TWO_BY_FOUR, ENV),
}


@pytest.mark.parametrize(("launcher", "case"), sorted(EXPECTED))
def test_exact_argv(launcher, case):
    layout, env = CASES[case]
    assert LAUNCHERS[launcher].argv(layout, CMD, env) == EXPECTED[(launcher, case)]


def test_every_launcher_and_case_is_covered():
    assert {k[0] for k in EXPECTED} == set(LAUNCHERS)
    assert {(name, case) for name in LAUNCHERS for case in CASES} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_env_sets_omp_threads(name):
    assert LAUNCHERS[name].env(THREADS) == {"OMP_NUM_THREADS": "4"}
    assert LAUNCHERS[name].env(ONE) == {"OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_argv_is_a_fresh_list_and_leaves_inputs_alone(name):
    cmd, env = list(CMD), dict(ENV)
    first = LAUNCHERS[name].argv(TWO_BY_FOUR, cmd, env)
    first.append("junk")
    assert LAUNCHERS[name].argv(TWO_BY_FOUR, cmd, env) == EXPECTED[(name, "env")]
    assert cmd == CMD and env == ENV


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_string_command_is_refused(name):
    with pytest.raises(ValueError, match="command"):
        LAUNCHERS[name].argv(ONE, "./app --flag")


@pytest.mark.parametrize("name", ["mpich", "openmpi", "aprun", "pals"])
def test_gpus_without_ids_is_an_error_where_the_launcher_cannot_pick(name):
    layout = RankLayout(hosts=("nid00001",), ranks_per_node=2, gpus_per_rank=1)
    with pytest.raises(ValueError, match="gpu_ids"):
        LAUNCHERS[name].argv(layout, CMD)


def test_pals_keeps_order_when_asked():
    argv = PalsLauncher(python=PY, reverse_gpu_order=False).argv(SAME_GPUS, CMD)
    assert argv[argv.index("--ids") + 1] == "0,1,2,3"


def test_flux_keeps_dollar_literal():
    argv = FluxLauncher().argv(ONE, CMD, {"P": "$HOME/x"})
    assert "--env=P=$$HOME/x" in argv


def test_srun_refuses_commas_in_values():
    with pytest.raises(ValueError, match="B"):
        SrunLauncher().argv(ONE, CMD, {"B": "1,2"})


def test_bad_env_name():
    with pytest.raises(ValueError, match="env name"):
        MpichLauncher().argv(ONE, CMD, {"1BAD": "x"})


def test_aprun_needs_nid_hosts():
    with pytest.raises(ValueError, match="nid"):
        AprunLauncher().argv(RankLayout(hosts=("login1",), ranks_per_node=1), CMD)


# --- layout validation -------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"hosts": ("a",), "ranks_per_node": 0}, "ranks_per_node"),
    ({"hosts": ("a",), "ranks_per_node": -1}, "ranks_per_node"),
    ({"hosts": (), "ranks_per_node": 1}, "hosts"),
    ({"hosts": ("",), "ranks_per_node": 1}, "hosts"),
    ({"hosts": ("a,b",), "ranks_per_node": 1}, "hosts"),
    ({"hosts": ("a",), "ranks_per_node": 1, "threads_per_rank": 0}, "threads_per_rank"),
    ({"hosts": ("a",), "ranks_per_node": 1, "gpus_per_rank": -1}, "gpus_per_rank"),
    ({"hosts": ("a", "b"), "ranks_per_node": 1, "gpus_per_rank": 1, "gpu_ids": (("0",),)},
     "gpu_ids"),
    ({"hosts": ("a",), "ranks_per_node": 2, "gpus_per_rank": 1, "gpu_ids": (("0",),)},
     "gpu_ids"),
    ({"hosts": ("a",), "ranks_per_node": 1.5}, "ranks_per_node"),
])
def test_invalid_layout_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RankLayout(**kwargs)


def test_hosts_as_a_string_is_refused():
    with pytest.raises(TypeError, match="hosts"):
        RankLayout(hosts="nid00001", ranks_per_node=1)


def test_layout_stores_tuples_and_counts():
    layout = RankLayout(hosts=["a", "b"], ranks_per_node=3, gpus_per_rank=1,
                        gpu_ids=[[0, 1, 2], ["3", "4", "5"]])
    assert layout.hosts == ("a", "b")
    assert layout.gpu_ids == (("0", "1", "2"), ("3", "4", "5"))
    assert (layout.num_nodes, layout.num_ranks) == (2, 6)
    hash(layout)


# --- registry and detection --------------------------------------------------------------------

@pytest.mark.parametrize(("name", "cls"), [
    ("mpich", MpichLauncher), ("openmpi", OpenMpiLauncher), ("srun", SrunLauncher),
    ("aprun", AprunLauncher), ("pals", PalsLauncher), ("flux", FluxLauncher),
])
def test_registry_key_is_the_module_name(name, cls):
    assert launcher_class(name) is cls
    assert cls.name == name
    assert cls.__module__.rsplit(".", 1)[-1] == name


def test_unknown_launcher_lists_valid_names():
    with pytest.raises(ValueError, match="'jsrun'.*aprun, flux, mpich, openmpi, pals, srun"):
        launcher_class("jsrun")


def no_aprun(_name):
    return None


@pytest.mark.parametrize(("environ", "which", "expected"), [
    ({"FLUX_URI": "local:///tmp/f", "SLURM_JOB_ID": "1"}, no_aprun, FluxLauncher),
    ({"SLURM_JOB_ID": "1"}, lambda n: "/usr/bin/aprun", SrunLauncher),
    ({}, lambda n: "/usr/bin/aprun" if n == "aprun" else None, AprunLauncher),
    ({"PBS_JOBID": "1.pbs"}, no_aprun, MpichLauncher),
    ({}, no_aprun, MpichLauncher),
])
def test_detect_launcher(environ, which, expected):
    assert type(detect_launcher(environ, which=which)) is expected


def test_detect_launcher_explicit_name_wins():
    assert type(detect_launcher({"SLURM_JOB_ID": "1"}, which=no_aprun, name="pals")) \
        is PalsLauncher
    with pytest.raises(ValueError, match="valid names"):
        detect_launcher({}, which=no_aprun, name="nope")


# --- the GPU wrapper's choice, without exec ----------------------------------------------------

@pytest.mark.parametrize(("environ", "expected"), [
    ({"PMI_LOCAL_RANK": "0"}, "3"),
    ({"PMI_LOCAL_RANK": "3"}, "0"),
    ({"PALS_LOCAL_RANKID": "1"}, "2"),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}, "1"),
    ({"MPI_LOCALRANKID": "1"}, "2"),
])
def test_affinity_env_picks_local_rank_slice(environ, expected):
    out = gpu_affinity.affinity_env(environ, ["3,2,1,0"], 1, "x3001c0s13b0n0")
    assert out == dict.fromkeys(gpus.DEVICE_VARIABLES, expected)


def test_affinity_env_two_per_rank_and_per_host_ids():
    specs = ["h1=0,1,2,3", "h2.example.org=4,5,6,7"]
    assert gpu_affinity.affinity_env({"MPI_LOCALRANKID": "1"}, specs, 2,
                                     "h2")["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert gpu_affinity.affinity_env({"MPI_LOCALRANKID": "0"}, specs, 2,
                                     "h1.example.org")["ZE_AFFINITY_MASK"] == "0,1"


@pytest.mark.parametrize(("environ", "specs", "host", "message"), [
    ({}, ["0,1"], "h", "local rank"),
    ({"MPI_LOCALRANKID": "2"}, ["0,1"], "h", "local rank 2"),
    ({"MPI_LOCALRANKID": "0"}, ["h1=0"], "h9", "no --ids entry"),
])
def test_affinity_env_errors(environ, specs, host, message):
    with pytest.raises(RuntimeError, match=message):
        gpu_affinity.affinity_env(environ, specs, 1, host)


def test_wrapper_main_reports_errors_without_exec(monkeypatch, capsys):
    for name in LOCAL_RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert gpu_affinity.main(["--ids", "0", "--", "true"]) == 2
    assert "local rank" in capsys.readouterr().err
