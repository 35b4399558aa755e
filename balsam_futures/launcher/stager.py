"""A launcher's transfer thread: it fetches the inputs of tasks that wait for them and ships
the outputs of the tasks its runs finished, apart from the workers, so that a transfer
never holds a core.

    loop: staging_pending? (a read) ──no──> sleep STAGE_POLL_S
          claim_staging (a write: AWAITING_STAGE_IN -> STAGING_IN, and its STAGING_OUT tasks)
          Transfers.run(items of every task, batched by endpoint: staging/)
          end_staging: STAGED_IN -> READY | STAGED_OUT -> JOB_FINISHED | FAILED (StagingError)

Retries of a transfer happen inside ``Transfers`` (``BALSAM_FUTURES_STAGE_RETRIES``); the
error that ended the last attempt is the task's error and its history message.  A fenced
launcher's thread stops; the tasks it held go back (STAGING_IN -> AWAITING_STAGE_IN,
STAGING_OUT -> RESTART_READY) with the rest of the launcher's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import config
from ..backends.staging_ops import StagingOutcome, StagingTask
from ..errors import LauncherFenced, StagingError, StoreError
from ..serialization import dump_exception
from ..tasks import TaskState, resolve_workdir
from .backoff import back_off

log = logging.getLogger(__name__)

#: How often an idle transfer thread looks for work (one indexed read).
STAGE_POLL_S = 0.5
#: Tasks taken per claim: their transfers are batched together.
STAGE_BATCH = 64


class Stager:
    """Runs in its own thread (``run``) until ``stop`` is set."""

    def __init__(self, store: Any, launcher_id: int, *, site: str | None,
                 tags: dict[str, Any] | None = None, stop: threading.Event | None = None,
                 on_fenced: Callable[[], None] | None = None, transfers: Any = None) -> None:
        self.store = store
        self.lid = launcher_id
        self.site = site
        # The launcher's --tag filter: a value, or a tuple of values (any of them).
        self.tags = dict(tags or {})
        self.stop = stop or threading.Event()
        self.on_fenced = on_fenced
        self._transfers = transfers
        #: True while it holds or is about to take work: the launcher is not idle.
        self.busy = False

    @property
    def transfers(self) -> Any:
        if self._transfers is None:
            from ..staging import Transfers

            self._transfers = Transfers(
                retries=config.setting("STAGE_RETRIES"),
                slots=config.setting("STAGE_SLOTS"),
                globus_endpoint=config.setting("GLOBUS_ENDPOINT"))
        return self._transfers

    def run(self) -> None:
        delay = 0.0
        while not self.stop.is_set():
            try:
                worked = self.pass_once()
                delay = 0.0
            except LauncherFenced:
                log.warning("transfer thread: this launcher's lease expired; it stops")
                if self.on_fenced is not None:
                    self.on_fenced()
                return
            except StoreError as exc:
                delay = back_off(delay, 10.0) if delay else 0.1
                log.warning("transfer thread: store error (%s); retrying in %.1f s", exc,
                            delay)
                self.stop.wait(delay)
                continue
            except Exception:  # noqa: BLE001 - a dead transfer thread would strand tasks
                log.exception("transfer thread: unexpected error; it goes on")
                self.stop.wait(STAGE_POLL_S)
                continue
            if not worked:
                self.stop.wait(STAGE_POLL_S)

    def pass_once(self) -> bool:
        """Look for work once, do it; returns whether there was any."""
        self.busy = self.store.staging_pending(self.lid, self.tags)
        if not self.busy:
            return False
        tasks = self.store.claim_staging(self.lid, STAGE_BATCH, self.tags)
        if not tasks:
            self.busy = False
            return False
        outcomes = self.transfer(tasks)
        self.store.end_staging(self.lid, outcomes)
        return True

    def workdir(self, task: StagingTask) -> Path:
        from .._shell_run import relative_default_workdir

        rel = task.workdir or relative_default_workdir(task.name, task.tags, task.id)
        return Path(resolve_workdir(rel, self.site or str(_default_site())))

    def transfer(self, tasks: list[StagingTask]) -> list[StagingOutcome]:
        """Every task's transfers, batched together; one outcome per task."""
        from ..staging import StageIn, StageOut, stage_in_items, stage_out_items

        items, failed = [], {}
        for task in tasks:
            try:
                workdir = self.workdir(task)
                if task.state is TaskState.STAGING_IN:
                    items += stage_in_items(task.id, workdir,
                                            [StageIn(u, d) for u, d in task.stage_in])
                else:
                    items += stage_out_items(task.id, workdir,
                                             [StageOut(p, u) for p, u in task.stage_out])
            except (StagingError, OSError) as exc:
                failed[task.id] = str(exc)
        reports = self.transfers.run(items) if items else {}
        outcomes = []
        for task in tasks:
            what = "inputs" if task.state is TaskState.STAGING_IN else "outputs"
            report = reports.get(task.id)
            error = failed.get(task.id) or (report.error if report is not None else None)
            if error:
                direction = "stage_in" if task.state is TaskState.STAGING_IN else "stage_out"
                exc = StagingError(f"task {task.id}: {direction} failed: {error}")
                outcomes.append(StagingOutcome(
                    task.id, task.state, f"{direction} failed: {error}",
                    dump_exception(exc, f"Task {task.id} (launcher {self.lid} transfers)")))
                continue
            copied = report.copied if report is not None else 0
            skipped = report.skipped if report is not None else 0
            outcomes.append(StagingOutcome(
                task.id, task.state,
                f"{what}: {copied} file(s) transferred, {skipped} already present"))
        return outcomes


def _default_site() -> Path:
    from ..sitedir import resolve_site

    return resolve_site(None)
