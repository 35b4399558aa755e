"""Batch schedulers: one runner here, one small pure class per batch system.

    BatchJobManager.submit ── render_script(template) ──> <site>/batch/bf-job-<id>.sh
            │
            ▼
    Scheduler.submit(script)   ── _submit_args ──> run (sbatch, qsub, bsub) ──> stdout
            │                                         _parse_submit_output ──> scheduler id
    Scheduler.statuses(ids)    ── _status_args ──> run ──> _parse_status_output
            │                     (_history_args for the ids the first answer lacks)
            ▼
    {id: SchedulerStatus(state: BatchJobState | None, native state, details)}
    Scheduler.delete(id)       ── _delete_args ──> run

As in Balsam's ``SubprocessSchedulerInterface``, this base class does every subprocess call
(:meth:`Scheduler._run`); a batch-system class only builds argv and parses text, so each one
is tested against recorded output without a cluster.  Each class maps its native states into
:class:`BatchJobState` through one table; an unknown native state maps to ``None`` with a
warning, and the job then keeps the state it had.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import (  # noqa: F401  (re-exported: the package's errors live in errors.py)
    BatchJobError,
    SchedulerCommandFailed,
    SchedulerCommandNotFound,
    SchedulerError,
    SchedulerSubmitError,
    SitePolicyError,
    TemplateError,
)
from ..launcher.config import JOB_MODES

log = logging.getLogger(__name__)

#: How long one scheduler command may take.  sbatch/qsub answer in well under a second on a
#: healthy system, but a controller under load or restarting can take tens of seconds; a
#: shorter limit would fail submissions that would have succeeded, a longer one stalls the
#: service loop (and ``queue ls``) behind a hung controller.
COMMAND_TIMEOUT_S = 60.0


class BatchJobState(str, enum.Enum):
    """The life of a launcher batch job, with Balsam's names."""

    PENDING_SUBMISSION = "PENDING_SUBMISSION"
    SUBMIT_FAILED = "SUBMIT_FAILED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PENDING_DELETION = "PENDING_DELETION"
    FINISHED = "FINISHED"

    def __str__(self) -> str:
        return self.value


B = BatchJobState

BATCH_STATE_DESCRIPTIONS: dict[BatchJobState, str] = {
    B.PENDING_SUBMISSION: "stored; its script is being written and submitted",
    B.SUBMIT_FAILED: "the scheduler refused it (or its command is missing); see error",
    B.QUEUED: "waiting in the scheduler's queue",
    B.RUNNING: "running: its launcher serves tasks",
    B.PENDING_DELETION: "asked to leave the queue; waiting for the scheduler to confirm",
    B.FINISHED: "ended (completed, cancelled, failed or timed out; see status_info)",
}

#: The one table of allowed moves.  QUEUED may go straight to FINISHED (a short job between
#: two polls, or a cancellation by hand); RUNNING may not return to QUEUED except on a requeue
#: by the scheduler (a node failure with --requeue), which Slurm reports as PENDING again.
BATCH_TRANSITIONS: dict[BatchJobState, frozenset[BatchJobState]] = {
    B.PENDING_SUBMISSION: frozenset({B.QUEUED, B.SUBMIT_FAILED}),
    B.SUBMIT_FAILED: frozenset(),
    B.QUEUED: frozenset({B.RUNNING, B.PENDING_DELETION, B.FINISHED}),
    B.RUNNING: frozenset({B.QUEUED, B.PENDING_DELETION, B.FINISHED}),
    B.PENDING_DELETION: frozenset({B.FINISHED}),
    B.FINISHED: frozenset(),
}

#: Jobs the scheduler may still hold (they are polled, and count against queue limits).
ACTIVE_BATCH_STATES: frozenset[BatchJobState] = frozenset(
    {B.PENDING_SUBMISSION, B.QUEUED, B.RUNNING, B.PENDING_DELETION})
#: Jobs whose state only the scheduler can change (the ones a sync asks about).
POLLED_BATCH_STATES: frozenset[BatchJobState] = frozenset(
    {B.QUEUED, B.RUNNING, B.PENDING_DELETION})


def batch_sources(target: BatchJobState) -> frozenset[BatchJobState]:
    """States from which ``target`` may be reached."""
    return frozenset(s for s, allowed in BATCH_TRANSITIONS.items() if target in allowed)


# -- errors ---------------------------------------------------------------------------------


# -- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerStatus:
    """What the scheduler says about one of its jobs.

    ``state`` is ``None`` when the native state is not in the class's table (the job keeps
    the state it had); ``native`` is the scheduler's own word and ``details`` anything else
    parsed (queue, nodes, exit code), kept in the job's ``status_info``.
    """

    state: BatchJobState | None
    native: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_info(self) -> dict[str, Any]:
        return {"native_state": self.native, **self.details}


_WORD = re.compile(r"^[A-Za-z0-9_.:@+,=/-]*$")


@dataclass(frozen=True)
class BatchJobRequest:
    """What one launcher batch job asks for (validated on creation).

    ``queue`` and ``project`` may be empty (the scheduler's default); ``options`` feeds the
    template (``pre_run``, ``directives``, ``platform``, ``mpi_launcher``, ``workers``,
    ``idle_timeout``, or anything a site template reads); ``scheduler`` None means the
    site's default.
    """

    num_nodes: int
    wall_time_min: int
    queue: str = ""
    project: str = ""
    job_mode: str = "mpi"
    filter_tags: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    scheduler: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_nodes", "wall_time_min"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        for name in ("queue", "project"):
            value = getattr(self, name)
            # Both land in scheduler directives, where a space or newline would change the
            # script (a newline would add a line of its own).
            if not isinstance(value, str) or not _WORD.match(value):
                raise ValueError(f"{name} {value!r} may hold only letters, digits and "
                                 "_.:@+,=/- (no spaces or newlines)")
        if self.job_mode not in JOB_MODES:
            raise ValueError(f"job_mode must be one of {', '.join(JOB_MODES)}, not "
                             f"{self.job_mode!r}")
        for key, value in dict(self.filter_tags).items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise TypeError(f"filter_tags must map names to strings, not {key!r}: "
                                f"{value!r}")
        for name in ("pre_run", "directives"):
            lines = self.options.get(name, [])
            if isinstance(lines, str) or not all(isinstance(x, str) for x in lines):
                raise TypeError(f"options[{name!r}] must be a list of strings, not {lines!r}")
        for line in self.options.get("directives", []):
            if "\n" in line:
                raise ValueError(f"a directive must be one line: {line!r}")


# -- the runner -----------------------------------------------------------------------------


class Scheduler:
    """Submit, poll and delete batch jobs through one batch system's commands.

    ``env`` adds variables to the commands' environment (e.g. ``SLURM_CONF``); the process's
    own environment is never changed.  Subclasses set ``name``, ``template``, ``states`` and
    implement the ``_*_args``/``_parse_*`` methods; they never run anything themselves.
    """

    #: Registry key, also the file name of the module and the launcher's --platform value.
    name: ClassVar[str] = ""
    #: The batch-script template (package data in ``schedulers/templates/``; a site may
    #: override it with a file of the same name in ``<site>/templates/``).
    template: ClassVar[str] = ""
    #: Native state -> BatchJobState: the one translation table of the class.
    states: ClassVar[Mapping[str, BatchJobState]] = {}
    #: Non-zero exit codes of the status command that still carry a usable answer (PBS exits
    #: 153 when one of several ids is unknown, yet prints the others).
    status_ok_codes: ClassVar[frozenset[int]] = frozenset({0})

    def __init__(self, env: Mapping[str, str] | None = None,
                 timeout: float = COMMAND_TIMEOUT_S) -> None:
        self.env = dict(env or {})
        self.timeout = timeout

    # -- public ----------------------------------------------------------------------------

    def submit(self, script: Path, log_path: Path) -> str:
        """Submit ``script`` (its output goes to ``log_path``); returns the scheduler's id."""
        argv = self._submit_args(Path(script), Path(log_path))
        stdin = self._submit_input(Path(script))
        try:
            # From the script's folder: output files a scheduler names by default (Slurm's
            # Torque wrappers ignore "#PBS -o") land there, and so does the job's working
            # directory, whatever the caller's.
            out = self._run(argv, stdin=stdin, cwd=Path(script).parent)
        except SchedulerCommandFailed as exc:
            words = _last_words(exc.stderr or exc.stdout) or f"exit code {exc.returncode}"
            raise SchedulerSubmitError(
                f"{self.name} rejected the batch job ({argv[0]}): {words}", argv=exc.argv,
                returncode=exc.returncode, stdout=exc.stdout, stderr=exc.stderr) from exc
        try:
            return self._parse_submit_output(out)
        except (ValueError, IndexError) as exc:
            raise SchedulerSubmitError(
                f"{argv[0]} accepted the job but its answer carries no job id: {out.strip()!r}",
                argv=argv, returncode=0, stdout=out) from exc

    def statuses(self, scheduler_ids: Sequence[str]) -> dict[str, SchedulerStatus]:
        """The status of each job the scheduler still knows, by the ids given.

        Ids absent from the answer are no longer known to the scheduler (they ended long
        enough ago to be forgotten).  Raises :class:`SchedulerError` when the scheduler
        cannot be asked: a job must not be taken for finished because the controller was
        down (PSI/J marks such jobs FAILED after a 30 s outage).
        """
        ids = [str(i) for i in scheduler_ids]
        if not ids:
            return {}
        found = self._ask(self._status_args(ids), self._parse_status_output)
        missing = [i for i in ids if self.id_key(i) not in found]
        history = self._history_args(missing) if missing else None
        if history:
            # Accounting (sacct, qstat -x) is optional on a site: without it, a job gone from
            # the live view has simply ended.
            try:
                found.update(self._ask(history, self._parse_history_output))
            except SchedulerError as exc:
                log.debug("%s: no job history (%s)", self.name, exc)
        return {i: found[self.id_key(i)] for i in ids if self.id_key(i) in found}

    def delete(self, scheduler_id: str) -> None:
        """Ask the scheduler to remove the job (queued or running)."""
        self._run(self._delete_args(str(scheduler_id)))

    def translate(self, native: str) -> BatchJobState | None:
        """Map a native state through the class's table; ``None`` (and a warning) if new."""
        state = self.states.get(native)
        if state is None:
            log.warning("%s job state %r is not known to balsam_futures; the job keeps its "
                        "current state", self.name, native)
        return state

    def id_key(self, scheduler_id: str) -> str:
        """The form of an id under which statuses are matched (PBS drops the server)."""
        return scheduler_id

    # -- for subclasses --------------------------------------------------------------------

    def _submit_args(self, script: Path, log_path: Path) -> list[str]:
        raise NotImplementedError

    def _submit_input(self, script: Path) -> str | None:
        """Text for the submit command's stdin (LSF reads the script there)."""
        return None

    def _parse_submit_output(self, stdout: str) -> str:
        raise NotImplementedError

    def _status_args(self, scheduler_ids: list[str]) -> list[str]:
        raise NotImplementedError

    def _parse_status_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        """Statuses keyed by :meth:`id_key`."""
        raise NotImplementedError

    def _history_args(self, scheduler_ids: list[str]) -> list[str] | None:
        """A command reporting jobs that left the live view (accounting), if any."""
        return None

    def _parse_history_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        return self._parse_status_output(stdout)

    def _delete_args(self, scheduler_id: str) -> list[str]:
        raise NotImplementedError

    def _status_unknown_ids(self, stderr: str) -> bool:
        """Whether a failed status command only failed because an id was unknown."""
        return False

    # -- the one subprocess call -----------------------------------------------------------

    def _ask(self, argv: list[str], parse) -> dict[str, SchedulerStatus]:
        try:
            out = self._run(argv, ok=self.status_ok_codes)
        except SchedulerCommandFailed as exc:
            if exc.returncode is not None and self._status_unknown_ids(exc.stderr):
                return {}
            raise
        try:
            return parse(out)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SchedulerCommandFailed(
                f"cannot read the answer of {' '.join(argv[:2])}: {exc}; first line: "
                f"{out.strip().splitlines()[0] if out.strip() else '(empty)'!r}",
                argv=argv, returncode=0, stdout=out) from exc

    def _run(self, argv: list[str], *, stdin: str | None = None,
             ok: frozenset[int] = frozenset({0}), cwd: Path | None = None) -> str:
        """Run one scheduler command; returns its stdout."""
        env = {**os.environ, **self.env} if self.env else None
        log.debug("running %s", argv)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                                  timeout=self.timeout, errors="replace", cwd=cwd)
        except FileNotFoundError as exc:
            raise SchedulerCommandNotFound(
                f"the {self.name} command {argv[0]!r} was not found on PATH; run this on a "
                f"machine with {self.name}, or choose another scheduler (--scheduler, or "
                "\"scheduler\" in the site's settings.json)", argv=argv) from exc
        except subprocess.TimeoutExpired as exc:
            raise SchedulerCommandFailed(
                f"{argv[0]} did not answer within {self.timeout:g} s (is the {self.name} "
                "controller up?)", argv=argv) from exc
        if proc.returncode not in ok:
            words = _last_words(proc.stderr or proc.stdout) or "(no output)"
            raise SchedulerCommandFailed(
                f"{argv[0]} exited with code {proc.returncode}: {words}", argv=argv,
                returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        return proc.stdout


def _last_words(text: str) -> str:
    """The scheduler's message: its non-empty lines, joined (sbatch prints two)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return "; ".join(lines[-3:])
