"""Node discovery: each batch system's parser against fake environments and recorded files.

No scheduler is needed: every parser takes ``environ`` as a plain dict, node files are written
to ``tmp_path`` or read from ``tests/data/nodes/``, and commands go through a fake runner.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from balsam_futures.launcher.nodes import (
    DETECTION_ORDER,
    NodeSpec,
    discover_nodes,
    expand_hostlist,
    node_list_class,
)
from balsam_futures.launcher.nodes.cobalt import CobaltNodes
from balsam_futures.launcher.nodes.flux import RESOURCE_LIST_ARGV, FluxNodes
from balsam_futures.launcher.nodes.local import NVIDIA_SMI_ARGV, LocalNodes
from balsam_futures.launcher.nodes.lsf import LSFNodes
from balsam_futures.launcher.nodes.pbs import PBSNodes
from balsam_futures.launcher.nodes.slurm import SlurmNodes, parse_cpus_per_node

DATA = Path(__file__).resolve().parents[1] / "data" / "nodes"


class FakeRunner:
    """Answers each argv from a table of recorded outputs (or exceptions) and logs calls."""

    def __init__(self, answers):
        self.answers = dict(answers)
        self.calls = []

    def __call__(self, argv):
        argv = tuple(argv)
        self.calls.append(argv)
        answer = self.answers[argv]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def no_commands(argv):
    raise AssertionError(f"unexpected command {argv}")


def hosts(specs):
    return [s.hostname for s in specs]


def write_nodefile(tmp_path, lines, name="nodefile"):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)



@pytest.mark.parametrize("hostlist, expected", [
    # Written by hand as `scontrol show hostnames <hostlist>` prints them (one per line).
    ("tux[1-3]", ["tux1", "tux2", "tux3"]),
    ("lx[15,18,32-33]", ["lx15", "lx18", "lx32", "lx33"]),
    ("linux[00-07]", [f"linux0{i}" for i in range(8)]),
    ("node[8-10]", ["node8", "node9", "node10"]),
    ("node[08-10]", ["node08", "node09", "node10"]),
    ("nid[001-004,010],login1,gpu[1-2]-ib",
     ["nid001", "nid002", "nid003", "nid004", "nid010", "login1", "gpu1-ib", "gpu2-ib"]),
    ("rack[1-2]-node[01-02]",
     ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("a[1,3]b[7-8]c", ["a1b7c", "a1b8c", "a3b7c", "a3b8c"]),
    ("login1", ["login1"]),
    ("host1,host2", ["host1", "host2"]),
    ("n[5]", ["n5"]),
    ("n[1-2],n[1-2]", ["n1", "n2", "n1", "n2"]),  # kept as written, like scontrol
    ("  nid[1-2]\n", ["nid1", "nid2"]),
    ("x3005c0s[13,19]b0n0", ["x3005c0s13b0n0", "x3005c0s19b0n0"]),
])
def test_expand_hostlist(hostlist, expected):
    assert expand_hostlist(hostlist) == expected


@pytest.mark.parametrize("hostlist, message", [
    ("", "empty"),
    ("nid[1-3", "never closed"),
    ("nid1-3]", "unbalanced ']'"),
    ("nid[1-[2]]", "nested"),
    ("nid[3-1]", "descending"),
    ("nid[]", "empty brackets"),
    ("nid[a-b]", "bad range"),
    ("nid[1-]", "bad range"),
    ("nid[1,,2]", "bad range"),
    ("a,,b", "empty host name"),
    ("a,", "empty host name"),
    ("a b", "white space"),
    ("n[0-99999999]", "larger than"),
])
def test_expand_hostlist_rejects_malformed(hostlist, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        expand_hostlist(hostlist)


def test_expand_hostlist_rejects_non_str():
    with pytest.raises(TypeError, match="hostlist"):
        expand_hostlist(["a"])



def test_nodespec_is_frozen_and_checked():
    spec = NodeSpec("n1", 4, ("0", "1"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.cores = 8
    with pytest.raises(ValueError, match="cores"):
        NodeSpec("n1", 0)
    with pytest.raises(ValueError, match="hostname"):
        NodeSpec("", 1)
    with pytest.raises(TypeError, match="gpus"):
        NodeSpec("n1", 1, [0])



@pytest.mark.parametrize("environ, expected", [
    ({"FLUX_URI": "local:///tmp/flux", "SLURM_JOB_ID": "7"}, "flux"),  # flux under slurm
    ({"FLUX_JOB_ID": "f1234"}, "flux"),
    ({"SLURM_JOB_ID": "7", "PBS_JOBID": "1"}, "slurm"),
    ({"PBS_JOBID": "1.polaris-pbs-01"}, "pbs"),
    ({"COBALT_JOBID": "42"}, "cobalt"),
    ({"LSB_JOBID": "9"}, "lsf"),
    ({}, "local"),
    ({"SLURM_JOB_ID": ""}, "local"),
])
def test_detection_order(environ, expected):
    detected = [n for n in DETECTION_ORDER if node_list_class(n).detect(environ)]
    assert detected[0] == expected
    assert detected[-1] == "local"


def test_registry_keys_are_module_names():
    for name in DETECTION_ORDER:
        cls = node_list_class(name)
        assert cls.name == name
        assert cls.__module__.rsplit(".", 1)[-1] == name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown node list 'torque'.*flux, slurm, pbs"):
        discover_nodes({}, name="torque")


def two_node_environ(name, tmp_path):
    """A minimal job environment of each system holding the nodes ``h1`` and ``h2``."""
    nodefile = write_nodefile(tmp_path, ["h1", "h1", "h2", "h2"])
    return {
        "flux": {"FLUX_URI": "x", "FLUX_JOB_NODELIST": "h[1-2]"},
        "slurm": {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "h[1-2]",
                  "SLURM_JOB_CPUS_PER_NODE": "2(x2)"},
        "pbs": {"PBS_JOBID": "1", "PBS_NODEFILE": nodefile},
        "cobalt": {"COBALT_JOBID": "1", "COBALT_NODEFILE": nodefile},
        "lsf": {"LSB_JOBID": "1", "LSB_DJOB_HOSTFILE": nodefile},
    }[name]


@pytest.mark.parametrize("name", [n for n in DETECTION_ORDER if n != "local"])
def test_every_batch_system_same_behaviour(name, tmp_path):
    environ = two_node_environ(name, tmp_path)
    cls = node_list_class(name)
    assert cls.detect(environ)
    assert [n for n in DETECTION_ORDER if node_list_class(n).detect(environ)] == [name, "local"]
    # explicit shape wins over everything the environment says
    environ = {**environ, "CUDA_VISIBLE_DEVICES": "7"}
    specs = discover_nodes(environ, cores_per_node=3, gpus_per_node=2, runner=no_commands)
    assert specs == [NodeSpec("h1", 3, ("0", "1")), NodeSpec("h2", 3, ("0", "1"))]
    # without it, GPUs come from the visible-devices variable
    specs = discover_nodes(environ, cores_per_node=3, runner=no_commands)
    assert [s.gpus for s in specs] == [("7",), ("7",)]
    # the environ mapping is only read
    assert "CUDA_VISIBLE_DEVICES" in environ and len(specs) == 2


def test_discover_nodes_detects_and_passes_shape():
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n[1-2]"}
    specs = discover_nodes(env, cores_per_node=8, gpus_per_node=2, runner=no_commands)
    assert specs == [NodeSpec("n1", 8, ("0", "1")), NodeSpec("n2", 8, ("0", "1"))]


def test_discover_nodes_by_name_ignores_detection():
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n[1-2]"}
    specs = discover_nodes(env, name="local", nodes=3, cores_per_node=2, gpus_per_node=0)
    assert hosts(specs) == ["local0", "local1", "local2"]


def test_discover_nodes_rejects_foreign_shape_arguments():
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n1"}
    with pytest.raises(TypeError, match="nodes.*'slurm'"):
        discover_nodes(env, nodes=2, cores_per_node=1)
    with pytest.raises(TypeError, match="ranks"):
        discover_nodes({}, ranks=2)


def test_discover_nodes_reads_os_environ_at_call_time(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "late[1-2]")
    for name in ("FLUX_URI", "FLUX_JOB_ID", "FLUX_JOB_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    assert hosts(discover_nodes(cores_per_node=1, gpus_per_node=0)) == ["late1", "late2"]


@pytest.mark.parametrize("shape, error, message", [
    ({"cores_per_node": 0}, ValueError, "cores_per_node must be >= 1"),
    ({"gpus_per_node": -1}, ValueError, "gpus_per_node must be >= 0"),
    ({"cores_per_node": "4"}, TypeError, "cores_per_node must be an int"),
    ({"gpus_per_node": True}, TypeError, "gpus_per_node must be an int"),
])
@pytest.mark.parametrize("name", DETECTION_ORDER)
def test_every_system_checks_shape_arguments(name, shape, error, message):
    with pytest.raises(error, match=message):
        discover_nodes({}, name=name, runner=no_commands, **shape)



SLURM = {"SLURM_JOB_ID": "123", "SLURM_JOB_NODELIST": "nid[001-004],login1",
         "SLURM_JOB_CPUS_PER_NODE": "64(x4),32"}


def test_slurm_cores_from_cpus_per_node():
    specs = SlurmNodes.discover(SLURM)
    assert [(s.hostname, s.cores, s.gpus) for s in specs] == [
        ("nid001", 64, ()), ("nid002", 64, ()), ("nid003", 64, ()), ("nid004", 64, ()),
        ("login1", 32, ())]


def test_slurm_old_nodelist_name_and_explicit_cores():
    env = {"SLURM_JOB_ID": "1", "SLURM_NODELIST": "c[1-2]"}
    assert SlurmNodes.discover(env, cores_per_node=16) == [NodeSpec("c1", 16), NodeSpec("c2", 16)]


@pytest.mark.parametrize("extra, gpus_per_node, expected", [
    ({"SLURM_GPUS_ON_NODE": "4"}, None, ("0", "1", "2", "3")),
    ({"SLURM_JOB_GPUS": "2,3"}, None, ("2", "3")),
    ({"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, None, ("0", "1")),
    ({"SLURM_GPUS_ON_NODE": "2", "ROCR_VISIBLE_DEVICES": "4,5"}, None, ("4", "5")),
    ({"SLURM_GPUS_ON_NODE": "4"}, 2, ("0", "1")),  # the explicit argument wins
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None, ()),
    ({}, None, ()),
])
def test_slurm_gpus(extra, gpus_per_node, expected):
    specs = SlurmNodes.discover({**SLURM, **extra}, gpus_per_node=gpus_per_node)
    assert all(s.gpus == expected for s in specs)


@pytest.mark.parametrize("value, expected", [
    ("36", [36]),
    ("72(x2),36", [72, 72, 36]),
    ("8,16(x2)", [8, 16, 16]),
])
def test_parse_cpus_per_node(value, expected):
    assert parse_cpus_per_node(value, len(expected)) == expected


@pytest.mark.parametrize("env, message", [
    ({"SLURM_JOB_ID": "1"}, "neither SLURM_JOB_NODELIST nor SLURM_NODELIST"),
    ({**SLURM, "SLURM_JOB_NODELIST": "nid[1-"}, "SLURM_JOB_NODELIST='nid\\[1-'.*never closed"),
    ({**SLURM, "SLURM_JOB_CPUS_PER_NODE": ""}, "SLURM_JOB_CPUS_PER_NODE is not set"),
    ({**SLURM, "SLURM_JOB_CPUS_PER_NODE": "64(x3),32"}, "describes 4 nodes.*has 5"),
    ({**SLURM, "SLURM_JOB_CPUS_PER_NODE": "64(4),32"}, "SLURM_JOB_CPUS_PER_NODE.*bad item"),
    ({**SLURM, "SLURM_JOB_CPUS_PER_NODE": "0(x5)"}, "SLURM_JOB_CPUS_PER_NODE.*>= 1"),
    ({**SLURM, "SLURM_GPUS_ON_NODE": "four"}, "SLURM_GPUS_ON_NODE='four' is not an integer"),
    ({**SLURM, "SLURM_JOB_GPUS": "0,,1"}, "SLURM_JOB_GPUS.*empty GPU id"),
    ({**SLURM, "CUDA_VISIBLE_DEVICES": "0,"}, "CUDA_VISIBLE_DEVICES.*empty GPU id"),
])
def test_slurm_malformed(env, message):
    with pytest.raises(ValueError, match=message):
        SlurmNodes.discover(env)



POLARIS_HOSTS = ["x3005c0s13b0n0.hsn.cm.polaris.alcf.anl.gov",
                 "x3005c0s13b1n0.hsn.cm.polaris.alcf.anl.gov",
                 "x3005c0s19b0n0.hsn.cm.polaris.alcf.anl.gov",
                 "x3005c0s1b0n0.hsn.cm.polaris.alcf.anl.gov"]


def test_pbs_polaris_nodefile_with_machine_shape():
    env = {"PBS_JOBID": "1.polaris-pbs-01", "PBS_NODEFILE": str(DATA / "polaris_PBS_NODEFILE")}
    specs = PBSNodes.discover(env, cores_per_node=32, gpus_per_node=4)
    assert hosts(specs) == POLARIS_HOSTS
    assert {(s.cores, s.gpus) for s in specs} == {(32, ("0", "1", "2", "3"))}


def test_pbs_repeats_are_cores_in_first_appearance_order(tmp_path):
    path = write_nodefile(tmp_path, ["b", "a", "b", "", "a", "b", "c"])
    specs = PBSNodes.discover({"PBS_JOBID": "1", "PBS_NODEFILE": path})
    assert specs == [NodeSpec("b", 3), NodeSpec("a", 2), NodeSpec("c", 1)]


def test_pbs_aurora_tiles_from_ze_affinity_mask(tmp_path):
    path = write_nodefile(tmp_path, ["x4102c0s0b0n0"])
    env = {"PBS_JOBID": "1", "PBS_NODEFILE": path, "ZE_AFFINITY_MASK": "0.0,0.1"}
    assert PBSNodes.discover(env, cores_per_node=102)[0].gpus == ("0.0", "0.1")


@pytest.mark.parametrize("lines, message", [
    (None, "PBS_NODEFILE is not set"),
    ([], "PBS_NODEFILE=.*lists no hosts"),
    (["a b"], "PBS_NODEFILE=.*not a single host name"),
])
def test_pbs_malformed(tmp_path, lines, message):
    env = {"PBS_JOBID": "1"}
    if lines is not None:
        env["PBS_NODEFILE"] = write_nodefile(tmp_path, lines)
    with pytest.raises(ValueError, match=message):
        PBSNodes.discover(env)


def test_pbs_missing_nodefile_names_variable_and_path(tmp_path):
    missing = str(tmp_path / "gone")
    with pytest.raises(ValueError, match="PBS_NODEFILE=.*gone.*cannot be read"):
        PBSNodes.discover({"PBS_JOBID": "1", "PBS_NODEFILE": missing})



def test_cobalt_partname_theta():
    env = {"COBALT_JOBID": "42", "COBALT_PARTNAME": "1-3,7,3830"}
    specs = CobaltNodes.discover(env, cores_per_node=64)
    assert specs == [NodeSpec(h, 64) for h in
                     ("nid00001", "nid00002", "nid00003", "nid00007", "nid03830")]


def test_cobalt_nodefile_wins_over_partname(tmp_path):
    path = write_nodefile(tmp_path, ["thetagpu06", "thetagpu07"])
    env = {"COBALT_JOBID": "42", "COBALT_PARTNAME": "1-2", "COBALT_NODEFILE": path}
    specs = CobaltNodes.discover(env, gpus_per_node=8)
    assert specs == [NodeSpec("thetagpu06", 1, tuple("01234567")),
                     NodeSpec("thetagpu07", 1, tuple("01234567"))]


@pytest.mark.parametrize("env, message", [
    ({"COBALT_PARTNAME": "1-3"}, "cores_per_node is required with COBALT_PARTNAME"),
    ({}, "COBALT_PARTNAME is not set"),
    ({"COBALT_PARTNAME": "3-1"}, "COBALT_PARTNAME='3-1': descending"),
    ({"COBALT_PARTNAME": "1,x"}, "COBALT_PARTNAME='1,x': bad item 'x'"),
    ({"COBALT_PARTNAME": "1-3,2"}, "COBALT_PARTNAME=.*twice"),
])
def test_cobalt_malformed(env, message):
    with pytest.raises(ValueError, match=message):
        CobaltNodes.discover({"COBALT_JOBID": "42", **env})



SUMMIT_NODES = [NodeSpec("a01n01", 42), NodeSpec("a01n02", 42)]


def test_lsf_summit_hostfile_drops_launch_node():
    env = {"LSB_JOBID": "9", "LSB_DJOB_HOSTFILE": str(DATA / "summit_LSB_DJOB_HOSTFILE"),
           "LSB_MCPU_HOSTS": "ignored 1"}
    assert LSFNodes.discover(env) == SUMMIT_NODES


def test_lsf_summit_mcpu_hosts():
    env = {"LSB_JOBID": "9", "LSB_MCPU_HOSTS": "batch3 1 a01n01 42 a01n02 42",
           "LSB_HOSTS": "ignored"}
    assert LSFNodes.discover(env) == SUMMIT_NODES


def test_lsf_hosts_repeated_per_slot():
    env = {"LSB_JOBID": "9", "LSB_HOSTS": "login1 " + "a01n01 " * 3 + "a01n02 " * 3}
    assert LSFNodes.discover(env, gpus_per_node=6) == [
        NodeSpec("a01n01", 3, tuple("012345")), NodeSpec("a01n02", 3, tuple("012345"))]


@pytest.mark.parametrize("mcpu, expected", [
    ("h1 1", [("h1", 1)]),                          # a lone host is never dropped
    ("h1 1 h2 1 h3 1", [("h1", 1), ("h2", 1), ("h3", 1)]),  # one slot per host: keep all
    ("h1 1 h2 4 h3 1", [("h1", 1), ("h2", 4), ("h3", 1)]),  # not the Summit shape
    ("h1 4 h2 4", [("h1", 4), ("h2", 4)]),
    ("h1 2 h2 2 h1 2", [("h1", 4), ("h2", 2)]),     # repeated host: slots add up
])
def test_lsf_launch_node_rule(mcpu, expected):
    specs = LSFNodes.discover({"LSB_JOBID": "9", "LSB_MCPU_HOSTS": mcpu})
    assert [(s.hostname, s.cores) for s in specs] == expected


def test_lsf_explicit_cores_override_slots():
    env = {"LSB_JOBID": "9", "LSB_MCPU_HOSTS": "batch3 1 a01n01 42"}
    assert LSFNodes.discover(env, cores_per_node=44) == [NodeSpec("a01n01", 44)]


@pytest.mark.parametrize("env, message", [
    ({}, "none of LSB_DJOB_HOSTFILE, LSB_MCPU_HOSTS, LSB_HOSTS"),
    ({"LSB_MCPU_HOSTS": "h1 42 h2"}, "LSB_MCPU_HOSTS=.*pairs"),
    ({"LSB_MCPU_HOSTS": "h1 many"}, "LSB_MCPU_HOSTS='many' is not an integer"),
    ({"LSB_MCPU_HOSTS": "h1 0"}, "LSB_MCPU_HOSTS='0' must be >= 1"),
    ({"LSB_DJOB_HOSTFILE": "/nonexistent/hostfile"}, "LSB_DJOB_HOSTFILE=.*cannot be read"),
])
def test_lsf_malformed(env, message):
    with pytest.raises(ValueError, match=message):
        LSFNodes.discover({"LSB_JOBID": "9", **env})



def test_flux_nodelist_from_environment():
    env = {"FLUX_JOB_ID": "f1", "FLUX_JOB_NODELIST": "tioga[12-13,20]"}
    specs = FluxNodes.discover(env, cores_per_node=64, runner=no_commands)
    assert specs == [NodeSpec(h, 64) for h in ("tioga12", "tioga13", "tioga20")]


def test_flux_resource_list_through_runner():
    runner = FakeRunner({RESOURCE_LIST_ARGV: (DATA / "flux_resource_list_nodelist.txt")
                         .read_text()})
    env = {"FLUX_URI": "local:///tmp/flux-x/local-0", "HIP_VISIBLE_DEVICES": "0,1"}
    specs = FluxNodes.discover(env, cores_per_node=32, runner=runner)
    assert hosts(specs) == ["tioga12", "tioga13", "tioga14"]  # tioga13 (in both lines) once
    assert specs[0].gpus == ("0", "1")
    assert runner.calls == [RESOURCE_LIST_ARGV]


def test_flux_resource_list_with_header_and_cpu_count_fallback(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 12)
    runner = FakeRunner({RESOURCE_LIST_ARGV: "NODELIST\nquartz3\n\n\n"})
    assert FluxNodes.discover({"FLUX_URI": "x"}, runner=runner) == [NodeSpec("quartz3", 12)]


@pytest.mark.parametrize("answer, error, message", [
    ("NODELIST\n\n", ValueError, "listed no nodes"),
    ("quartz[3\n", ValueError, "printed 'quartz\\[3'.*never closed"),
    (subprocess.CalledProcessError(1, list(RESOURCE_LIST_ARGV), "", "broker gone"),
     subprocess.CalledProcessError, "non-zero exit status 1"),
    (FileNotFoundError("flux"), FileNotFoundError, "flux"),
])
def test_flux_resource_list_failures(answer, error, message):
    runner = FakeRunner({RESOURCE_LIST_ARGV: answer})
    with pytest.raises(error, match=message):
        FluxNodes.discover({"FLUX_URI": "x"}, cores_per_node=1, runner=runner)


def test_flux_malformed_nodelist_names_variable():
    with pytest.raises(ValueError, match="FLUX_JOB_NODELIST='n\\[2-1\\]'.*descending"):
        FluxNodes.discover({"FLUX_JOB_NODELIST": "n[2-1]"}, runner=no_commands)



def test_local_single_node_uses_cpu_count_at_call_time(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    runner = FakeRunner({NVIDIA_SMI_ARGV: FileNotFoundError("nvidia-smi")})
    assert LocalNodes.discover({}, runner=runner) == [NodeSpec("localhost", 6)]
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert LocalNodes.discover({}, runner=runner) == [NodeSpec("localhost", 1)]


def test_local_virtual_nodes():
    specs = LocalNodes.discover({}, nodes=3, cores_per_node=4, gpus_per_node=1)
    assert specs == [NodeSpec(f"local{i}", 4, ("0",)) for i in range(3)]


@pytest.mark.parametrize("environ, expected", [
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, ("2", "3")),
    ({"CUDA_VISIBLE_DEVICES": "GPU-4c2b3a1e,MIG-0e1f2a3b"}, ("GPU-4c2b3a1e", "MIG-0e1f2a3b")),
    ({"CUDA_VISIBLE_DEVICES": ""}, ()),  # set but empty hides every GPU
    ({"ROCR_VISIBLE_DEVICES": "0, 1"}, ("0", "1")),
    ({"HIP_VISIBLE_DEVICES": "1"}, ("1",)),
    ({"ZE_AFFINITY_MASK": "0.0,0.1,1.0"}, ("0.0", "0.1", "1.0")),
    ({"CUDA_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "1"}, ("0",)),  # CUDA first
])
def test_local_gpus_from_visible_devices(environ, expected):
    specs = LocalNodes.discover(environ, cores_per_node=1, runner=no_commands)
    assert specs[0].gpus == expected


def test_local_gpus_from_nvidia_smi():
    runner = FakeRunner({NVIDIA_SMI_ARGV: (DATA / "nvidia_smi_L.txt").read_text()})
    specs = LocalNodes.discover({}, cores_per_node=1, runner=runner)
    assert specs[0].gpus == ("0", "1", "2", "3")  # the MIG line is not a GPU


@pytest.mark.parametrize("answer", [
    FileNotFoundError("nvidia-smi"),
    subprocess.CalledProcessError(9, list(NVIDIA_SMI_ARGV), "", "NVIDIA-SMI has failed"),
    subprocess.TimeoutExpired(list(NVIDIA_SMI_ARGV), 30),
    "No devices were found\n",
])
def test_local_no_gpus_when_nvidia_smi_fails_or_finds_none(answer):
    runner = FakeRunner({NVIDIA_SMI_ARGV: answer})
    assert LocalNodes.discover({}, cores_per_node=1, runner=runner)[0].gpus == ()


def test_local_explicit_gpus_skip_nvidia_smi():
    specs = LocalNodes.discover({"CUDA_VISIBLE_DEVICES": "5"}, cores_per_node=1,
                                gpus_per_node=2, runner=no_commands)
    assert specs[0].gpus == ("0", "1")


@pytest.mark.parametrize("nodes, error", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                          (True, TypeError)])
def test_local_rejects_bad_node_count(nodes, error):
    with pytest.raises(error, match="nodes must be"):
        LocalNodes.discover({}, nodes=nodes, cores_per_node=1, gpus_per_node=0)



def test_import_does_no_work():
    """Importing the package runs no command and reads no CPU count (STYLE: no work at import)."""
    code = ("import os, subprocess\n"
            "os.cpu_count = subprocess.run = None\n"
            "import balsam_futures.launcher.nodes as n\n"
            "for name in n.DETECTION_ORDER: n.node_list_class(name)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
