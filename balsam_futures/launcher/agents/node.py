"""``python -m balsam_futures.launcher.agents.node``: one node's agent, started by its head.

    head (head.py, relay thread)                agent (this module, one per node)
    ----------------------------                ---------------------------------
                                                agent_connect: rank 0 opens a port, prints it;
    head_connect  ────────── connect ─────────> all ranks accept together
    head_setup    <── HELLO / SETUP ──> / READY agent_setup: WorkerPool on this node's cores/GPUs
    dispatch      ── TASKS ───────────────────> agent_serve: pool.dispatch
    kill          ── KILL ────────────────────> pool.kill
    collect       <── OUTCOMES ─────────────── pool.collect (results, crashes, time-outs)
    stop          ── STOP ────────────────────> pool.stop, exit

An agent runs the head's WorkerPool unchanged, so a run here behaves as on the head's node
(GPU pinning, time-outs, a crashed worker failing only its run).  It never touches the store.
Its workers see ``BALSAM_FUTURES_AGENT=<node>``, and none of the variables that made the agent
a rank of its MPI launch (a task importing mpi4py must not join the agents' job).  They die
with the agent, as a head's die with the head (``workers/process.py``: the agent's main thread
starts them).  A head killed outright leaves the agents' launch running: an agent stops when the
head has been silent for SILENCE_S.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from ... import config
from ...backends.store import TaskOutcome
from ..backoff import back_off, next_poll
from ..mpi.rank_variables import without_rank_variables
from ..workers import WorkerPool
from .protocol import (
    ACTIVE_S,
    BEAT_S,
    POLL_MAX,
    POLL_MIN,
    PORT_PREFIX,
    SILENCE_S,
    AgentSetup,
    Tag,
    init_mpi,
)

log = logging.getLogger(__name__)

#: Set in every worker of an agent to the name of the node it serves (config.py: AGENT).
AGENT_VARIABLE = config.env_name("AGENT")


def worker_environ(environ: Mapping[str, str], setup: AgentSetup) -> dict[str, str]:
    """The environment of this agent's workers: none of the variables the MPI launcher set
    for the agent's rank (rank_variables.py), which are the agent's, not its workers'."""
    return {**without_rank_variables(environ), **setup.worker_env, AGENT_VARIABLE: setup.node}


def agent_connect(MPI: Any) -> Any:
    """The intercommunicator to the head: rank 0 prints a port, the head connects to it."""
    world = MPI.COMM_WORLD
    port = MPI.Open_port() if world.Get_rank() == 0 else None
    if port is not None:
        sys.stdout.write(PORT_PREFIX + port + "\n")
        sys.stdout.flush()
    head = world.Accept(port, root=0)
    head.Set_errhandler(MPI.ERRORS_RETURN)
    return head


def agent_setup(MPI: Any, head: Any) -> AgentSetup:
    """HELLO, then wait for this agent's SETUP (the node it serves)."""
    head.send((socket.gethostname(), os.getpid()), dest=0, tag=Tag.HELLO)
    status = MPI.Status()
    until = time.monotonic() + SILENCE_S
    poll = POLL_MIN
    while time.monotonic() < until:
        msg = head.improbe(source=0, status=status)
        if msg is None:
            time.sleep(poll)  # MPI has no descriptor to wait on
            poll = back_off(poll, POLL_MAX)
            continue
        body = msg.recv()
        if status.Get_tag() == Tag.SETUP:
            return body
        if status.Get_tag() == Tag.STOP:
            raise SystemExit(0)
    raise TimeoutError(f"no setup from the head within {SILENCE_S:g} s")


def agent_serve(MPI: Any, head: Any, pool: WorkerPool) -> None:
    """Relay tasks and kills to the workers and their outcomes to the head, until STOP."""
    status = MPI.Status()
    pending: list[Any] = []  # isend requests: a large result must not block the loop
    poll = POLL_MIN
    heard = sent = last_traffic = time.monotonic()
    while True:
        outcomes: list[TaskOutcome] = []
        back: list[int] = []
        busy = False
        while (msg := head.improbe(source=0, status=status)) is not None:
            body, tag = msg.recv(), status.Get_tag()
            heard, busy = time.monotonic(), True
            if tag == Tag.TASKS:
                for task, extra, pin in body:
                    if not pool.dispatch(task, extra, pin):
                        back.append(task.id)  # no free worker (the head counts, so rare)
            elif tag == Tag.KILL:
                ids, run_state, reason = body
                outcomes += pool.kill(set(ids), run_state, reason)
            elif tag == Tag.STOP:
                return
        done, handback, _ = pool.collect(0 if busy else poll)
        outcomes += done
        back += [t.id for t in handback]
        now = time.monotonic()
        if outcomes or back:
            pending.append(head.isend((outcomes, back), dest=0, tag=Tag.OUTCOMES))
            sent, busy = now, True
        elif now - sent >= BEAT_S:
            pending.append(head.isend(None, dest=0, tag=Tag.BEAT))
            sent = now
        pending = [r for r in pending if not r.Test()]
        if now - heard > SILENCE_S:
            raise TimeoutError(f"the head has been silent for {now - heard:.0f} s")
        if busy:
            last_traffic = now
        poll = next_poll(poll, now - last_traffic, POLL_MIN, POLL_MAX, ACTIVE_S)


def main() -> int:
    logging.basicConfig(level=config.setting("LOG_LEVEL").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    MPI = init_mpi()
    head = agent_connect(MPI)
    pool = None
    try:
        setup = agent_setup(MPI, head)
        pool = WorkerPool(setup.cores, launcher_id=setup.launcher_id, init_blob=setup.init_blob,
                          max_tasks_per_child=setup.max_tasks_per_child,
                          env=worker_environ(os.environ, setup), context=setup.context,
                          gpu_ids=setup.gpus)
        pool.host = setup.node  # named in crash and time-out messages
        pool.start()
        head.send(None, dest=0, tag=Tag.READY)
        agent_serve(MPI, head, pool)
    except BaseException as exc:  # noqa: BLE001 - tell the head, which hands our runs back
        if isinstance(exc, SystemExit) and not exc.code:
            return 0
        log.error("agent on %s stopped: %s", socket.gethostname(), exc)
        try:
            head.isend(f"{type(exc).__name__}: {exc}", dest=0, tag=Tag.FAILED).Wait()
        except Exception:  # noqa: BLE001 - the head may be gone too
            pass
        return 1
    finally:
        if pool is not None:
            pool.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())  # without MPI_Finalize, which is collective with the head (init_mpi)
