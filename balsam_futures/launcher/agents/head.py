"""Per-node agents, head side: one-rank runs on other nodes go to warm workers over mpi4py.

    dispatcher (main thread)       relay thread (the head's only MPI caller)   agent (node.py)
    ------------------------       -----------------------------------------   ---------------
    start() ─────────────────────> MPI launch: one agent per node ───────────> agent_connect:
                                   _head_connect <── port on the launch's stdout  rank 0 prints
                                   _head_setup: HELLO <─, SETUP ─>, READY <─   agent_setup
    dispatch(task, extra, pin, node)  _head_serve:                             agent_serve:
               └──> outbox ──────> TASKS ──────────────────────────────────> pool.dispatch
    kill(ids) ──> outbox ────────> KILL ───────────────────────────────────> pool.kill
    collect() <── inbox, waker <── OUTCOMES (outcomes, handed-back ids) <─── pool.collect
                                   BEAT both ways when quiet; STOP at the end

The pilot runs a one-rank task placed on an agent's node here instead of through
``mpiexec -n 1 -hosts <node>`` (one process start per task).  Only the head talks to the store;
agents only relay.  MPI calls stay on the relay thread: the dispatcher and the relay exchange
plain lists under a lock, and the relay wakes the dispatcher through ``waker`` (a pipe the
head's WorkerPool watches), so the head's own workers are served exactly as before.

MPI has no file descriptor to sleep on, so the relay (and each agent) polls for messages
(tags, bodies and timings in protocol.py): every POLL_MIN right after traffic, backing off to
POLL_MAX when quiet.  Blocking receives would not help: MPICH spins inside them.

The agents are started with the launcher's own MPI launcher (``MpiLauncher.argv``), so srun,
aprun or PALS place them as they place tasks; rank 0 opens an MPI port and prints it, and the
head connects to it.  ``MPI_Comm_spawn`` was tried too and is not used: from the head (an MPI
singleton) MPICH runs whatever ``mpiexec`` comes first on PATH, and with Open MPI's first the
spawn hangs; it also cannot go through srun, aprun or PALS.  The head connects (rather than
accepts) because a connect is only attempted once the agents are known to be waiting, while
an accept would wait forever for agents that never started.

A crashed worker fails only its run (WorkerCrashed, from the agent's WorkerPool).  A dead agent
(its launch exited, it fell silent, or MPI failed talking to it) hands its runs back to be
placed again; from then on the pilot starts runs on that node through the MPI launcher.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._wakeup import Waker
from ...backends.store import ClaimedTask, TaskOutcome
from ...errors import AgentsFailed, MpiLaunchError
from ...tasks import TaskState
from ..backoff import back_off, next_poll
from ..mpi import RankLayout, detect_launcher
from ..nodes import NodeSpec
from ..workers.process import dies_with_this_process
from .protocol import (
    ACTIVE_S,
    AGENT_MODULE,
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

#: How long the head waits for every agent to connect and report ready.  A big allocation
#: needs time to start Python on every node (imports from a shared file system); while it
#: waits the launcher runs nothing, and past it the agents are given up on.
START_TIMEOUT_S = 120.0
#: How long agents get to stop their workers and exit before their launch is killed.
STOP_TIMEOUT_S = 10.0
#: How often the relay checks that the agents' launch still runs (a waitpid).
LAUNCH_CHECK_S = 0.1


@dataclass
class _Agent:
    node: int  # index in the pilot's NodePool
    spec: NodeSpec
    rank: int = -1
    pid: int | None = None
    alive: bool = False
    running: dict[int, ClaimedTask] = field(default_factory=dict)


class AgentPool:
    """One agent per node in ``nodes`` (index in the pilot's NodePool, spec), started with one
    MPI launch; WorkerPool's duties for the runs placed on those nodes."""

    def __init__(self, nodes: Sequence[tuple[int, NodeSpec]], *, launcher_id: int,
                 mpi_launcher: str, local_nodes: bool, init_blob: bytes | None = None,
                 max_tasks_per_child: int | None = None,
                 worker_env: Mapping[str, str] | None = None,
                 context: Mapping[str, Any] | None = None) -> None:
        if not nodes:
            raise ValueError("nodes must name at least one node for an agent")
        self._agents = {i: _Agent(i, spec) for i, spec in nodes}
        self._by_rank: dict[int, _Agent] = {}
        # Kept as counts, since the dispatcher asks on every turn: the workers of live agents,
        # and the runs they hold.
        self._cores = 0
        self._busy = 0
        self.launcher_id = launcher_id
        self.mpi_launcher = mpi_launcher
        self.local_nodes = local_nodes
        self._setup = dict(launcher_id=launcher_id, init_blob=init_blob,
                           max_tasks_per_child=max_tasks_per_child,
                           worker_env=dict(worker_env or {}), context=dict(context or {}))
        self.waker = Waker()  # set by the relay when collect() has news
        self._relay_waker = Waker()  # set by the dispatcher when the outbox has news
        self._lock = threading.Lock()  # guards _outbox and _inbox
        self._outbox: list[tuple[int, Tag, Any]] = []
        self._inbox: list[tuple[int, Tag, Any]] = []
        self._ready = threading.Event()
        self._stopping = False
        self.start_error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._stdout_tail = b""  # what the launch printed after the port line
        self._deadline = 0.0  # for the whole start (monotonic)
        self._thread: threading.Thread | None = None

    # -- lifecycle (dispatcher) --------------------------------------------------------------

    def start(self) -> None:
        """Start the agents' MPI launch and the relay; ``wait_ready`` says how it went."""
        self._deadline = time.monotonic() + START_TIMEOUT_S
        self._thread = threading.Thread(target=self._relay, name="balsam-futures-agents",
                                        daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = START_TIMEOUT_S + 10) -> bool:
        """Wait until every agent is serving; False (with ``start_error``) if they are not.

        The relay gives up at START_TIMEOUT_S itself; ``timeout`` only guards against an MPI
        call that never returns."""
        if not self._ready.wait(timeout) and self.start_error is None:
            self.start_error = f"the agents did not start within {timeout:g} s"
        if self.start_error is not None:
            self.stop()
        return self.start_error is None

    def stop(self) -> None:
        """Stop the agents (their workers' unfinished runs are requeued by the store)."""
        if self._stopping:
            return
        self._stopping = True
        self._relay_waker.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S + 5)
        for a in self._agents.values():
            a.alive = False
        self._cores = 0
        self.waker.close()
        self._relay_waker.close()

    def fileno(self) -> int:
        return self.waker.fileno()

    # -- feeding (dispatcher) ----------------------------------------------------------------

    def serves(self, node: int) -> bool:
        """Whether a live agent runs one-rank tasks on node ``node``."""
        a = self._agents.get(node)
        return a is not None and a.alive

    def capacity(self) -> int:
        return self._cores - self._busy

    def running(self) -> int:
        return self._busy

    def idle(self) -> bool:
        return not self._busy

    def dispatch(self, task: ClaimedTask, extra: Mapping[str, Any],
                 pin: tuple[str, ...] | None, node: int) -> bool:
        """Send ``task`` to the agent of node ``node`` (see WorkerPool.dispatch); False if that
        agent is gone or has no free worker."""
        a = self._agents.get(node)
        if a is None or not a.alive or len(a.running) >= a.spec.cores:
            return False
        a.running[task.id] = task
        self._busy += 1
        self._post(a.rank, Tag.TASKS, (task, dict(extra), pin))
        return True

    def kill(self, task_ids: set[int] | None, run_state: TaskState = TaskState.KILLED,
             reason: str = "killed on request") -> None:
        """Ask the agents to stop these runs (all with None); the outcomes come through
        ``collect``, since the agents answer over MPI."""
        for a in self._agents.values():
            ids = [i for i in a.running if task_ids is None or i in task_ids]
            if a.alive and ids:
                self._post(a.rank, Tag.KILL, (ids, run_state, reason))

    def _post(self, rank: int, tag: Tag, body: Any) -> None:
        with self._lock:
            self._outbox.append((rank, tag, body))
        self._relay_waker.set()

    # -- results (dispatcher) ----------------------------------------------------------------

    def collect(self) -> tuple[list[TaskOutcome], list[ClaimedTask]]:
        """What the agents reported since the last call (never waits): outcomes, and runs to
        place again (their agent died)."""
        self.waker.clear()
        with self._lock:
            inbox, self._inbox = self._inbox, []
        outcomes: list[TaskOutcome] = []
        handback: list[ClaimedTask] = []
        for rank, tag, body in inbox:
            a = self._by_rank[rank]
            if tag is Tag.OUTCOMES and a.alive:
                done, back = body
                # An outcome counts once: a run already ended here (killed, handed back) or
                # unknown is dropped.
                outcomes.extend(o for o in done if a.running.pop(o.task_id, None) is not None)
                handback.extend(a.running.pop(i) for i in back if i in a.running)
            elif tag is Tag.FAILED and a.alive:
                a.alive = False
                self._cores -= a.spec.cores
                log.warning("the agent on %s stopped (%s); %d run(s) there will start again, "
                            "and runs on that node now start through the MPI launcher",
                            a.spec.hostname, body, len(a.running))
                handback.extend(a.running.values())
                a.running.clear()
        self._busy -= len(outcomes) + len(handback)
        return outcomes, handback

    def wait_idle(self, timeout: float) -> tuple[list[TaskOutcome], list[ClaimedTask]]:
        """Collect until no run is left on the agents or ``timeout`` passes (after ``kill``
        at the end of the wall time, so that the outcomes are written before stopping)."""
        deadline = time.monotonic() + timeout
        outcomes: list[TaskOutcome] = []
        handback: list[ClaimedTask] = []
        while True:
            done, back = self.collect()
            outcomes += done
            handback += back
            left = deadline - time.monotonic()
            if not self.running() or left <= 0:
                return outcomes, handback
            select.select([self.waker.fileno()], [], [], left)

    # -- relay thread ------------------------------------------------------------------------

    def _relay(self) -> None:
        comm = None
        try:
            argv = self._launch_argv()
            # Its own session: a Ctrl-C at the terminal reaches the head, which stops the
            # agents in order, instead of killing them under their running tasks.
            # And SIGTERM when the head dies (the MPI launcher passes it to the agents, whose
            # workers die with them): a kill -9 of the head must not leave agents running
            # their tasks on while those tasks are requeued elsewhere.  The signal fires when
            # this (relay) thread ends, which it does only after the agents were stopped.
            preexec = dies_with_this_process(signal.SIGTERM)
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=preexec,
                                          stdout=subprocess.PIPE, start_new_session=True)
            comm = self._head_connect(init_mpi())
            self._head_setup(comm)
        except BaseException as exc:  # noqa: BLE001 - any failure: run without agents
            if self.start_error is None:
                self.start_error = str(exc) or type(exc).__name__
            self._end_launch()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._head_serve(comm)
        except BaseException as exc:  # noqa: BLE001 - a broken relay must not hang the head
            log.error("the agents' relay failed: %s", exc)
            self._all_dead(f"the relay failed: {exc}")
        finally:
            self._end_launch()

    def _launch_argv(self) -> list[str]:
        # The MPI launcher's program, found as a task's run would find it.
        try:
            launcher = detect_launcher(os.environ, name=self.mpi_launcher or "mpich",
                                       locate=True)
        except MpiLaunchError as exc:
            raise AgentsFailed(f"the agents are started with the MPI launcher "
                               f"{self.mpi_launcher!r}, whose program is not on PATH; name "
                               "the one this system has with --mpi-launcher") from exc
        specs = [a.spec for a in self._agents.values()]
        # Virtual nodes are all this machine; threads_per_rank = cores, so that launchers which
        # bind or confine ranks (srun, aprun) give each agent its whole node.
        hosts = ["localhost" if self.local_nodes else s.hostname for s in specs]
        layout = RankLayout(hosts, ranks_per_node=1, threads_per_rank=max(s.cores for s in specs))
        return launcher.argv(layout, [sys.executable, "-m", AGENT_MODULE])

    def _head_connect(self, MPI: Any) -> Any:
        """The intercommunicator to the agents, through the port agent rank 0 prints."""
        port = self._read_port()
        comm = MPI.COMM_SELF.Connect(port)
        comm.Set_errhandler(MPI.ERRORS_RETURN)  # a dead agent must not abort the head
        return comm

    def _read_port(self) -> str:
        """The port line of the launch's output (what comes before it is passed on)."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = self._deadline
        buf = b""
        while not self._stopping:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(PORT_PREFIX):
                    self._stdout_tail = buf
                    return text[len(PORT_PREFIX):].strip()
                _forward(line + b"\n")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentsFailed(f"no agent reported within {START_TIMEOUT_S:g} s")
            ready = select.select([fd, self._relay_waker.fileno()], [], [], left)[0]
            if fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    code = self._proc.wait()
                    raise AgentsFailed(f"the agents' launch ({self._proc.args[0]}) exited with "
                                       f"code {code} before the agents connected")
                buf += data
            if self._relay_waker.fileno() in ready:
                self._relay_waker.clear()
        raise AgentsFailed("the launcher stopped while its agents were starting")

    def _receive(self, comm: Any, until: float, want: Tag) -> tuple[int, Any]:
        """The next message (rank, body) with tag ``want`` or FAILED, polling until ``until``."""
        from mpi4py import MPI

        status = MPI.Status()
        poll = POLL_MIN
        while not self._stopping and time.monotonic() < until:
            msg = comm.improbe(status=status)
            if msg is None:
                if self._proc is not None and self._proc.poll() is not None:
                    raise AgentsFailed(f"the agents' launch exited with code "
                                       f"{self._proc.returncode} while they were starting")
                time.sleep(poll)  # nothing to wait on: MPI has no descriptor (see top)
                poll = back_off(poll, POLL_MAX)
                continue
            body = msg.recv()
            if status.Get_tag() == Tag.FAILED:
                raise AgentsFailed(f"agent rank {status.Get_source()}: {body}")
            if status.Get_tag() == want:
                return status.Get_source(), body
        raise AgentsFailed(f"the agents did not answer ({want.name}) in time")

    def _head_setup(self, comm: Any) -> None:
        """HELLO from each agent -> which node it serves -> SETUP -> READY."""
        until = self._deadline
        count = comm.Get_remote_size()
        if count != len(self._agents):
            raise AgentsFailed(f"{count} agents connected, {len(self._agents)} expected")
        hellos = dict(self._receive(comm, until, Tag.HELLO) for _ in range(count))
        free = list(self._agents.values())
        sends = []
        # On real nodes an agent serves the node it runs on (a launcher may order ranks its own
        # way); virtual nodes all run here, so they are taken in rank order.
        for rank in sorted(hellos):
            host, pid = hellos[rank]
            short = host.split(".")[0]
            match = [a for a in free if not self.local_nodes
                     and a.spec.hostname.split(".")[0] == short]
            a = (match or free)[0]
            if not match and not self.local_nodes:
                log.warning("agent on host %s serves node %s (no node of that name)", host,
                            a.spec.hostname)
            free.remove(a)
            a.rank, a.pid = rank, pid
            self._by_rank[rank] = a
            setup = AgentSetup(a.spec.hostname, a.spec.cores, a.spec.gpus, **self._setup)
            # isend: the setup may be large (the initializer), and a blocking send to an agent
            # that died meanwhile would never return; _receive makes progress on it.
            sends.append(comm.isend(setup, dest=rank, tag=Tag.SETUP))
        for _ in range(count):
            self._receive(comm, until, Tag.READY)
        for request in sends:
            request.Wait()  # done: every agent received its setup before saying READY
        for a in self._agents.values():
            a.alive = True
        self._cores = sum(a.spec.cores for a in self._agents.values())
        log.info("agents serving %d node(s): %s", count,
                 ", ".join(f"{a.spec.hostname} (pid {a.pid})" for a in self._agents.values()))

    def _head_serve(self, comm: Any) -> None:
        from mpi4py import MPI

        status = MPI.Status()
        alive = set(self._by_rank)
        now = time.monotonic()
        heard = dict.fromkeys(alive, now)
        sent = dict.fromkeys(alive, now)
        pending: list[Any] = []  # isend requests: a send to a stuck agent must not block
        poll, last_check, last_traffic = POLL_MIN, now, now
        out_fd = self._proc.stdout.fileno() if self._proc and self._proc.stdout else None
        if self._stdout_tail:
            _forward(self._stdout_tail)
        while True:
            with self._lock:
                outbox, self._outbox = self._outbox, []
            batches: dict[tuple[int, Tag], list[Any]] = {}
            for rank, tag, body in outbox:
                batches.setdefault((rank, tag), []).append(body)
            now = time.monotonic()
            for (rank, tag), bodies in batches.items():
                if rank not in alive:
                    continue  # its runs were handed back already
                messages = [bodies] if tag is Tag.TASKS else bodies  # one batch of tasks
                for body in messages:
                    pending.append(comm.isend(body, dest=rank, tag=tag))
                sent[rank] = now
            got = []
            while (msg := comm.improbe(status=status)) is not None:
                body = msg.recv()
                rank, tag = status.Get_source(), Tag(status.Get_tag())
                heard[rank] = now
                if tag is not Tag.BEAT and rank in alive:
                    got.append((rank, tag, body))
            pending = [r for r in pending if not r.Test()]
            if now - last_check >= LAUNCH_CHECK_S:
                last_check = now
                dead = []
                if self._proc is not None and self._proc.poll() is not None:
                    dead = [(r, f"its MPI launch exited with code {self._proc.returncode}")
                            for r in alive]
                dead += [(r, f"silent for {now - heard[r]:.0f} s") for r in alive
                         if now - heard[r] > SILENCE_S]
                got += [(rank, Tag.FAILED, why) for rank, why in dead]
                for rank in alive:
                    if now - sent[rank] >= BEAT_S:
                        pending.append(comm.isend(None, dest=rank, tag=Tag.BEAT))
                        sent[rank] = now
            alive.difference_update(rank for rank, tag, _ in got if tag is Tag.FAILED)
            if got:
                with self._lock:
                    self._inbox.extend(got)
                self.waker.set()
            if self._stopping:
                for rank in alive:
                    comm.isend(None, dest=rank, tag=Tag.STOP).Wait()
                return
            if got or outbox:
                last_traffic = now
            poll = next_poll(poll, now - last_traffic, POLL_MIN, POLL_MAX, ACTIVE_S)
            watch = [self._relay_waker.fileno()] + ([out_fd] if out_fd is not None else [])
            ready = select.select(watch, [], [], poll)[0]
            if out_fd in ready:
                data = os.read(out_fd, 65536)
                if data:
                    _forward(data)
                else:
                    out_fd = None
            if self._relay_waker.fileno() in ready:
                self._relay_waker.clear()

    def _all_dead(self, why: str) -> None:
        with self._lock:
            self._inbox.extend((r, Tag.FAILED, why) for r in self._by_rank)
        self.waker.set()

    def _end_launch(self) -> None:
        """Wait for the agents' launch to exit (they were told to stop, unless they never
        started), else terminate it: MPI launchers pass SIGTERM on to every rank, which a
        SIGKILL of the launcher alone would leave running.  SIGKILL if even that fails."""
        proc = self._proc
        if proc is None:
            return
        for wait, sig in ((STOP_TIMEOUT_S if self.start_error is None else 0.0, signal.SIGTERM),
                          (STOP_TIMEOUT_S, signal.SIGKILL), (None, None)):
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                log.warning("the agents' launch did not exit; sending it %s", sig.name)
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        if proc.stdout is not None:
            proc.stdout.close()


def _forward(data: bytes) -> None:
    """Pass the agents' standard output on to the launcher's."""
    try:
        os.write(sys.stdout.fileno(), data)
    except (OSError, ValueError):
        pass  # no usable stdout: drop it rather than fill the pipe

