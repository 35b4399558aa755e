"""Performing transfer items: plan batches per transport, run them, retry, report per task.

    items --route by URL kind--> local / http / rsync / globus .plan() --> batches
    round 1: every batch once (a batch moves several tasks' files together), up to
        ``slots`` batches at once (Balsam's transfer slots: one slow server does not hold
        up the other endpoints' transfers)
    round 2..retries: after backoff * 2**(round-2) seconds, each failed item alone, so a bad
        item is pinned to its own task and never fails its batch-mates
    --> one TaskTransferReport per task id
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import StagingError
from . import globus, http, local, rsync
from .base import Batch, BatchFailed, Outcome, TransferOptions, failed
from .items import IN, OUT, TransferItem
from .specs import GLOBUS, HTTP, LOCAL, RSYNC, SSH, locate

_TRANSPORTS = {"local": local, "http": http, "rsync": rsync, "globus": globus}


@dataclass
class TaskTransferReport:
    """How one task's transfers went."""

    task_id: int
    error: str | None = None  # None: all its items succeeded
    copied: int = 0  # files transferred
    skipped: int = 0  # files already present with the right size and checksum
    attempts: int = 0  # the most attempts any of its items needed


def transport_of(item: TransferItem) -> str:
    """The transport that moves ``item``: the remote side's kind decides."""
    kinds = {locate(item.source).kind, locate(item.destination).kind}
    if GLOBUS in kinds:
        return "globus"
    if HTTP in kinds:
        if item.direction != IN or locate(item.destination).kind != LOCAL:
            raise StagingError(f"{item.source} -> {item.destination}: http(s) URLs are "
                               "download-only (a stage-in source)")
        return "http"
    if kinds & {RSYNC, SSH}:
        if kinds != {LOCAL, RSYNC} and kinds != {LOCAL, SSH}:
            raise StagingError(f"{item.source} -> {item.destination}: rsync needs one local "
                               "side")
        return "rsync"
    return "local"


class Transfers:
    """Moves :class:`TransferItem` lists, batching what shares an endpoint.

    ``retries``: attempts per item (an item whose batch failed gets at least one attempt of
    its own); ``backoff``: seconds before the second attempt, doubled for each further one;
    ``link``: symlink local stage-in files instead of copying; ``globus_client``: a
    TransferClient (default: one built from BALSAM_FUTURES_GLOBUS_TOKEN on first use);
    ``globus_endpoint``: this site's Globus endpoint id (default
    BALSAM_FUTURES_GLOBUS_ENDPOINT); ``rsync``: the rsync program; ``timeout``: seconds one
    rsync process, HTTP socket operation or Globus task may take; ``sleep``: the backoff wait;
    ``slots``: batches run at once (each in a thread: they wait on the network or a child
    process, not the CPU).
    """

    def __init__(self, *, retries: int = 3, backoff: float = 0.5, link: bool = False,
                 globus_client: Any = None, globus_endpoint: str | None = None,
                 rsync: str = "rsync", timeout: float = 3600.0,
                 sleep: Callable[[float], Any] = time.sleep, slots: int = 4) -> None:
        if not isinstance(retries, int) or retries < 1:
            raise ValueError(f"retries must be an integer >= 1, not {retries!r}")
        if not backoff >= 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, not {backoff!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        if not callable(sleep):
            raise TypeError(f"sleep must be callable, not {sleep!r}")
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1, not {slots!r}")
        self.slots = slots
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self._globus_client = globus_client
        self.options = TransferOptions(link=link, rsync=rsync, timeout=timeout,
                                       globus_endpoint=globus_endpoint,
                                       globus_client=self._client)

    def _client(self) -> Any:
        if self._globus_client is None:
            self._globus_client = globus.build_client()
        return self._globus_client

    def run(self, items: Sequence[TransferItem]) -> dict[int, TaskTransferReport]:
        """Perform every item; one report per task id in ``items``, in order of appearance."""
        reports = {item.task_id: TaskTransferReport(item.task_id) for item in items}
        outcomes: list[Outcome | None] = [None] * len(items)
        attempts = [0] * len(items)
        allowed = [self.retries] * len(items)
        routed: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            if item.direction not in (IN, OUT):
                outcomes[index] = failed(item, f"direction must be {IN!r} or {OUT!r}, not "
                                               f"{item.direction!r}", permanent=True)
                continue
            try:
                routed.setdefault(transport_of(item), []).append(index)
            except (StagingError, ValueError, TypeError) as exc:
                outcomes[index] = Outcome(error=str(exc), permanent=True)
        planned = [p for name, indexes in routed.items()
                   for p in self._plan(name, items, indexes)]
        self._run_batches(planned, outcomes, attempts)
        for _batch, members in planned:
            for index in members:
                if len(members) > 1 and outcomes[index].shared:
                    # Blame must land on the right task: a batch-mate gets a solo try.
                    allowed[index] = max(self.retries, 2)
        for round_number in range(2, max(allowed, default=1) + 1):
            again = [index for index, outcome in enumerate(outcomes)
                     if outcome is not None and outcome.error and not outcome.permanent
                     and attempts[index] < allowed[index]]
            if not again:
                break
            self.sleep(self.backoff * 2 ** (round_number - 2))
            self._run_batches([p for index in again
                               for p in self._plan(transport_of(items[index]), items, [index])],
                              outcomes, attempts)
        for index, item in enumerate(items):
            report, outcome = reports[item.task_id], outcomes[index]
            report.attempts = max(report.attempts, attempts[index])
            if outcome is None:
                continue
            report.copied += outcome.copied
            report.skipped += outcome.skipped
            if outcome.error:
                report.error = (report.error + "\n" if report.error else "") + outcome.error
        return reports

    def _plan(self, name: str, items: Sequence[TransferItem],
              indexes: list[int]) -> list[tuple[Batch, list[int]]]:
        """The transport's batches over ``items[indexes]``, each with its items' indexes."""
        batches = _TRANSPORTS[name].plan([items[i] for i in indexes], self.options)
        # Transports build batches from the items they were given, as the same objects, so
        # identity maps each batch member back to its index (equal items may repeat).
        position: dict[int, list[int]] = {}
        for index in indexes:
            position.setdefault(id(items[index]), []).append(index)
        planned = []
        for batch in batches:
            members = [position[id(item)].pop(0) for item in batch.items]
            planned.append((batch, members))
        return planned

    def _run_batches(self, planned: list[tuple[Batch, list[int]]],
                     outcomes: list[Outcome | None], attempts: list[int]) -> None:
        """Run ``planned`` batches, ``slots`` at a time; each writes only its members'
        entries of ``outcomes`` and ``attempts``."""
        if self.slots == 1 or len(planned) < 2:
            for batch, members in planned:
                self._run_batch(batch, members, outcomes, attempts)
            return
        with ThreadPoolExecutor(min(self.slots, len(planned)),
                                thread_name_prefix="balsam-futures-transfer") as pool:
            for done in [pool.submit(self._run_batch, batch, members, outcomes, attempts)
                         for batch, members in planned]:
                done.result()  # _run_batch turns a transfer's errors into outcomes

    @staticmethod
    def _run_batch(batch: Batch, members: list[int], outcomes: list[Outcome | None],
                   attempts: list[int]) -> None:
        for index in members:
            attempts[index] += 1
        try:
            results = batch.run()
        except BatchFailed as exc:
            results = [failed(item, exc.words, permanent=exc.permanent, shared=True)
                       for item in batch.items]
        except StagingError as exc:
            results = [failed(item, str(exc), permanent=True) for item in batch.items]
        except Exception as exc:  # noqa: BLE001 - an OS error, or a transport's bug: the
            # items fail with its words (and are retried), rather than the transfer thread
            # stopping with their tasks held in STAGING_IN
            results = [failed(item, f"{type(exc).__name__}: {exc}", shared=True)
                       for item in batch.items]
        for index, result in zip(members, results):
            outcomes[index] = result
