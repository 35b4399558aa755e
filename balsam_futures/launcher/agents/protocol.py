"""What the launcher's head and its per-node agents say to each other over MPI.

    head (head.py, relay thread)                agent (node.py, one per node)
    ----------------------------                -----------------------------
                                                rank 0 prints PORT_PREFIX + its MPI port
    head_connect  ────────── connect ─────────> agent_connect (all ranks accept together)
    head_setup    <── HELLO ── SETUP ──> READY  agent_setup
    head_serve    ── TASKS, KILL, STOP ───────> agent_serve
                  <── OUTCOMES, FAILED ───────
                  <── BEAT ──> both ways when quiet

The tags and bodies (``Tag``, ``AgentSetup``), the polling and heartbeat constants both ends
share, and how MPI is brought up (``init_mpi``).  Bodies are pickled by mpi4py, so both ends
import these classes from here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: What the head's MPI launch runs on every node: node.py, by module name (``-m``).
AGENT_MODULE = "balsam_futures.launcher.agents.node"
#: The line agent rank 0 prints on the launch's standard output, followed by its MPI port.
PORT_PREFIX = "balsam-futures-agents-port "

#: Polling for MPI messages (head relay and agents): every POLL_MIN until ACTIVE_S after the
#: last message, then doubling up to POLL_MAX.  POLL_MIN bounds the delay each hop adds to a
#: short task (every task crosses two hops each way; at 0.2 ms, 200 no-ops through 2 agents
#: ran at about 1,000/s on two cores, with doubling from the last message on only 70/s);
#: POLL_MAX bounds the first task's delay after a quiet spell and a kill's latency (smaller
#: wakes every agent and the head more often while idle).
POLL_MIN, POLL_MAX, ACTIVE_S = 0.0002, 0.02, 1.0
#: Each side sends a heartbeat when it has sent nothing for BEAT_S; a side silent for SILENCE_S
#: is presumed dead (the head hands the agent's runs back; an agent stops its workers and
#: exits).  SILENCE_S must cover the longest an agent can be busy between two polls (stopping
#: a worker waits up to 5 s); longer leaves an orphaned agent running longer after its head
#: was killed outright.
BEAT_S, SILENCE_S = 1.0, 30.0


class Tag(enum.IntEnum):
    """MPI message tags, head <-> agent; the body of each is in the comment."""

    HELLO = 1  # agent -> head: (host name, pid)
    SETUP = 2  # head -> agent: AgentSetup
    READY = 3  # agent -> head: None (its workers are started)
    TASKS = 4  # head -> agent: [(ClaimedTask, extra context, GPU pin)]
    KILL = 5  # head -> agent: (task ids, run_state, reason)
    OUTCOMES = 6  # agent -> head: ([TaskOutcome], [ids of tasks handed back])
    BEAT = 7  # both ways: None
    STOP = 8  # head -> agent: None
    FAILED = 9  # agent -> head: why it cannot serve (setup failed)


@dataclass(frozen=True)
class AgentSetup:
    """What the head tells one agent after its hello: its node and how to run workers."""

    node: str  # the node's name in the pilot (NodeSpec.hostname)
    cores: int  # one warm worker per core, as on the head's node
    gpus: tuple[str, ...]
    launcher_id: int
    init_blob: bytes | None
    max_tasks_per_child: int | None
    worker_env: Mapping[str, str]
    context: Mapping[str, Any]  # sent with every task (site, store URL)


def init_mpi() -> Any:
    """Import mpi4py and initialize MPI on this thread, without MPI_Finalize at exit.

    Finalize is collective over every connected process: with one agent dead it would hang
    the exit, and the connection ends with the processes anyway.
    """
    import mpi4py

    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = False
    from mpi4py import MPI

    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_SERIALIZED)  # one thread calls MPI, not always the main one
    return MPI
