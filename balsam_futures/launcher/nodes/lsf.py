"""LSF (Summit, Lassen...): nodes from the job's host file or slot lists.

Sources, first found wins:

1. ``LSB_DJOB_HOSTFILE``: a file with one host per slot line;
2. ``LSB_MCPU_HOSTS``: ``"host1 42 host2 42"``, host and slot count pairs;
3. ``LSB_HOSTS``: space-separated hosts, one word per slot.  LSF leaves it unset when the
   list would be too long, which is why the compact ``LSB_MCPU_HOSTS`` comes before it.

Launch node: on Summit the batch script runs on a shared launch node that LSF lists first
with a single slot (``LSB_MCPU_HOSTS="batch3 1 a01n01 42 a01n02 42"``, OLCF Summit user guide,
"Batch Scripts"); tasks reach the compute nodes through jsrun and must not be placed on it.
Rule used here: the first host is dropped when it has exactly one slot, at least one other
host follows, and every following host has more than one slot.  A plain LSF job spread
one slot per host keeps all its hosts.

Cores: ``cores_per_node``, else the host's slot count (Summit: 42, the cores left to jobs).
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import (
    NodeList,
    NodeSpec,
    Runner,
    check_shape,
    count_slots,
    gpu_ids_for,
    parse_count,
    read_node_file,
    specs_from_slots,
)


class LSFNodes(NodeList):
    """Nodes of an LSF job (detected by ``LSB_JOBID``)."""

    name = "lsf"

    job_variables = ("LSB_JOBID",)

    @classmethod
    def discover(cls, environ: Mapping[str, str], *, cores_per_node: int | None = None,
                 gpus_per_node: int | None = None,
                 runner: Runner | None = None) -> list[NodeSpec]:
        check_shape(cores_per_node, gpus_per_node)
        slots = drop_launch_node(host_slots(environ))
        return specs_from_slots(slots, cores_per_node, gpu_ids_for(environ, gpus_per_node) or ())


def host_slots(environ: Mapping[str, str]) -> dict[str, int]:
    """Host -> slot count, in LSF's order, from the first source that is set."""
    if environ.get("LSB_DJOB_HOSTFILE", "").strip():
        return count_slots(read_node_file(environ, "LSB_DJOB_HOSTFILE"))
    mcpu = environ.get("LSB_MCPU_HOSTS", "").strip()
    if mcpu:
        words = mcpu.split()
        if len(words) % 2:
            raise ValueError(f"LSB_MCPU_HOSTS={mcpu!r} is not a list of 'host count' pairs")
        slots: dict[str, int] = {}
        for host, count in zip(words[::2], words[1::2]):
            slots[host] = slots.get(host, 0) + parse_count(count, "LSB_MCPU_HOSTS", least=1)
        return slots
    hosts = environ.get("LSB_HOSTS", "").split()
    if hosts:
        return count_slots(hosts)
    raise ValueError("none of LSB_DJOB_HOSTFILE, LSB_MCPU_HOSTS, LSB_HOSTS is set in the "
                     "job's environment")


def drop_launch_node(slots: dict[str, int]) -> dict[str, int]:
    """Without the Summit-style launch node (see the module docstring for the rule)."""
    counts = list(slots.values())
    if len(counts) > 1 and counts[0] == 1 and all(n > 1 for n in counts[1:]):
        return dict(list(slots.items())[1:])
    return slots
