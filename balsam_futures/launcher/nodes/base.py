"""Node discovery: what nodes, cores and GPUs this launcher's allocation holds.

    discover_nodes(environ, name=None, **shape)
        |  name given -> that class;  else the first class whose detect(environ) is true,
        |  in DETECTION_ORDER (flux, slurm, pbs, cobalt, lsf, local)
        v
    <System>Nodes.discover(environ, cores_per_node=, gpus_per_node=, runner=)
        |  parses the batch system's own variables and node files (pure: environ in, list out)
        v
    list[NodeSpec]  (frozen; handed to packing and the MPI launchers as plain data)

Each batch system is one module whose file name is its registry key (``slurm.py`` holds
``SlurmNodes``).  Only this package reads the schedulers' own variables (``SLURM_*``,
``PBS_*``...), and only from the ``environ`` mapping it is given, so tests need no scheduler.
Nothing here runs at import time: ``os.environ`` and ``os.cpu_count()`` are read inside calls.

Shape rules shared by every system (explicit arguments win over the environment):

- cores: ``cores_per_node`` if given, else what the batch system says per node (Slurm's
  ``SLURM_JOB_CPUS_PER_NODE``, slot counts in PBS/LSF/Cobalt node files), else the system's
  documented fallback;
- GPUs: ``gpus_per_node`` if given (ids ``"0"`` to ``"n-1"``), else the ids in the first of
  ``CUDA_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``,
  ``ZE_AFFINITY_MASK`` that is set (``launcher/gpus.py``: the launcher's own node; allocations
  are taken to be homogeneous), else the system's own hint, else none.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..gpus import visible_gpu_ids

#: ``runner(argv) -> stdout``; raises ``subprocess.CalledProcessError`` (argv, return code,
#: stdout, stderr) on failure and ``OSError`` when the program is missing.
Runner = Callable[[Sequence[str]], str]

# How long a discovery command (``flux resource list``, ``nvidia-smi -L``) may take.  Both
# answer in well under a second; a hung driver or broker must not hang the launcher's start,
# but too short a limit fails on a loaded login node.
COMMAND_TIMEOUT_S = 30.0

# Registry key (= module file name) -> class name, in detection order.  Flux comes first
# because a Flux instance is often started inside a Slurm (or LSF) allocation and inherits
# SLURM_JOB_ID; there its own view of the resources is the right one.  Local is the fallback
# and always detects.
DETECTION_ORDER = ("flux", "slurm", "pbs", "cobalt", "lsf", "local")
_CLASS_NAMES = {
    "flux": "FluxNodes",
    "slurm": "SlurmNodes",
    "pbs": "PBSNodes",
    "cobalt": "CobaltNodes",
    "lsf": "LSFNodes",
    "local": "LocalNodes",
}

@dataclass(frozen=True)
class NodeSpec:
    """One node of the allocation: its host name, usable cores and GPU ids.

    GPU ids are strings as the runtime expects them in ``CUDA_VISIBLE_DEVICES`` and friends:
    ``"0"``, ``"1"``, or ``"0.0"`` for an Intel GPU tile.
    """

    hostname: str
    cores: int
    gpus: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.hostname, str) or not self.hostname:
            raise ValueError(f"hostname must be a non-empty str, not {self.hostname!r}")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ValueError(f"cores must be an int >= 1, not {self.cores!r}")
        if not isinstance(self.gpus, tuple) or not all(isinstance(g, str) for g in self.gpus):
            raise TypeError(f"gpus must be a tuple of str, not {self.gpus!r}")


class NodeList(ABC):
    """One batch system's way of listing the nodes of the allocation it is running in.

    Subclasses are pure functions of ``environ``, node files and command text; they hold no
    state and are never instantiated.
    """

    #: the registry key, equal to the module's file name
    name: ClassVar[str]
    #: variables the batch system sets in every job; any one of them present means "here"
    job_variables: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        """Whether ``environ`` is the environment of a job of this batch system."""
        return any(environ.get(v) for v in cls.job_variables)

    @classmethod
    def this_node(cls, environ: Mapping[str, str]) -> str:
        """The name this batch system's node list gives the node this process runs on
        (short form): the host name, unless the system says otherwise."""
        return socket.gethostname().split(".")[0]

    @classmethod
    @abstractmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None,
                 runner: Runner | None = None) -> list[NodeSpec]:
        """The nodes of this job, in the batch system's order.

        Raises ``ValueError`` naming the variable (or file) that is missing or malformed.
        """


def node_list_class(name: str) -> type[NodeList]:
    """The ``NodeList`` subclass registered as ``name`` (its module's file name)."""
    if name not in _CLASS_NAMES:
        raise ValueError(f"unknown node list {name!r}; valid names: {', '.join(DETECTION_ORDER)}")
    module = importlib.import_module(f"{__package__}.{name}")
    return getattr(module, _CLASS_NAMES[name])


def this_node_name(environ: Mapping[str, str] | None = None) -> str:
    """This node's name as the detected batch system lists it (short form)."""
    environ = os.environ if environ is None else environ
    return detect_node_list(environ).this_node(environ)


def specs_from_slots(slots: Mapping[str, int], cores_per_node: int | None,
                     gpus: Sequence[str]) -> list[NodeSpec]:
    """Nodes from a node file's host -> slot counts (PBS, Cobalt, LSF): ``cores_per_node``
    if given, else each host's slots."""
    return build_specs(list(slots), [cores_per_node or n for n in slots.values()], gpus)


def detect_node_list(environ: Mapping[str, str]) -> type[NodeList]:
    """The first class in ``DETECTION_ORDER`` whose batch system ``environ`` belongs to."""
    for name in DETECTION_ORDER:
        cls = node_list_class(name)
        if cls.detect(environ):
            return cls
    raise AssertionError("LocalNodes.detect is always true")  # pragma: no cover


def discover_nodes(environ: Mapping[str, str] | None = None, name: str | None = None, *,
                   runner: Runner | None = None, **shape: Any) -> list[NodeSpec]:
    """The nodes of the current allocation.

    ``environ`` defaults to ``os.environ`` (read now, not at import).  ``name`` picks a batch
    system by registry key; otherwise it is detected.  ``shape`` takes ``cores_per_node``,
    ``gpus_per_node`` and, for ``local`` only, ``nodes``.
    """
    if environ is None:
        environ = os.environ
    cls = node_list_class(name) if name is not None else detect_node_list(environ)
    allowed = {"cores_per_node", "gpus_per_node"} | ({"nodes"} if cls.name == "local" else set())
    unknown = sorted(set(shape) - allowed)
    if unknown:
        raise TypeError(f"unexpected shape argument(s) {', '.join(unknown)} for node list "
                        f"{cls.name!r}; allowed: {', '.join(sorted(allowed))}")
    return cls.discover(environ, runner=runner, **shape)


def run_command(argv: Sequence[str]) -> str:
    """Run ``argv`` (no shell) and return its stdout; the default ``Runner``."""
    argv = list(argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          check=False)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc.stdout


def check_shape(cores_per_node: int | None, gpus_per_node: int | None) -> None:
    """Check the explicit shape arguments, naming the bad one."""
    for param, value, least in (("cores_per_node", cores_per_node, 1),
                                ("gpus_per_node", gpus_per_node, 0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{param} must be an int or None, not {type(value).__name__}")
        if value < least:
            raise ValueError(f"{param} must be >= {least}, not {value}")


def require(environ: Mapping[str, str], variable: str) -> str:
    """``environ[variable]``, stripped; ``ValueError`` naming it when missing or empty."""
    value = environ.get(variable, "").strip()
    if not value:
        raise ValueError(f"{variable} is not set (or empty) in the job's environment")
    return value


def parse_count(value: str, variable: str, *, least: int = 0) -> int:
    """``int(value)`` with an error that names ``variable``."""
    try:
        count = int(value.strip())
    except ValueError:
        raise ValueError(f"{variable}={value!r} is not an integer") from None
    if count < least:
        raise ValueError(f"{variable}={value!r} must be >= {least}")
    return count


def read_node_file(environ: Mapping[str, str], variable: str) -> list[str]:
    """The non-blank lines of the file named by ``environ[variable]`` (one host per slot)."""
    path = require(environ, variable)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except OSError as exc:
        raise ValueError(f"{variable}={path!r} cannot be read: {exc}") from exc
    hosts = [line for line in lines if line]
    if not hosts:
        raise ValueError(f"{variable}={path!r} lists no hosts")
    for host in hosts:
        if any(ch.isspace() for ch in host):
            raise ValueError(f"{variable}={path!r}: line {host!r} is not a single host name")
    return hosts


def count_slots(hosts: Iterable[str]) -> dict[str, int]:
    """Host -> number of times it appears, in order of first appearance."""
    slots: dict[str, int] = {}
    for host in hosts:
        slots[host] = slots.get(host, 0) + 1
    return slots


def gpu_ids_for(environ: Mapping[str, str], gpus_per_node: int | None) -> tuple[str, ...] | None:
    """Explicit ``gpus_per_node`` first, then the visible-devices variables; None if neither."""
    if gpus_per_node is not None:
        return tuple(str(i) for i in range(gpus_per_node))
    return visible_gpu_ids(environ)


def build_specs(hosts: Sequence[str], cores: Sequence[int],
                gpus: tuple[str, ...]) -> list[NodeSpec]:
    """Zip host names and per-node core counts into ``NodeSpec`` objects sharing ``gpus``."""
    return [NodeSpec(host, n, gpus) for host, n in zip(hosts, cores, strict=True)]
