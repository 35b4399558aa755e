"""What every transport module hands the planner: batches of items and one outcome per item.

Each transport (``local``, ``http``, ``rsync``, ``globus``) offers ``plan(items, options)``,
which groups items into :class:`Batch` objects.  ``Batch.run`` returns one :class:`Outcome`
per item, in order, or raises :class:`BatchFailed` when the batch as a whole failed and the
transport cannot tell which item was at fault; the planner then retries its items one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .items import TransferItem


@dataclass
class Outcome:
    """How one item went."""

    copied: int = 0
    skipped: int = 0
    error: str | None = None  # the transfer's own words, already prefixed by the item
    permanent: bool = False  # retrying cannot help (an HTTP 404, a missing endpoint id)
    #: The error is its batch's and may be a batch-mate's fault: the item gets an attempt of
    #: its own even when ``retries`` is 1.
    shared: bool = False


def failed(item: TransferItem, words: str, *, permanent: bool = False,
           shared: bool = False) -> Outcome:
    """An :class:`Outcome` whose error names the item's source and destination."""
    return Outcome(error=f"{item.source} -> {item.destination}: {words}", permanent=permanent,
                   shared=shared)


class BatchFailed(Exception):
    """A whole batch failed (rsync exited non-zero, a Globus task FAILED): ``words`` is the
    transfer's own account, given to each of its items."""

    def __init__(self, words: str, *, permanent: bool = False) -> None:
        super().__init__(words)
        self.words = words
        self.permanent = permanent


@dataclass(frozen=True)
class TransferOptions:
    """The settings of one :class:`~balsam_futures.staging.Transfers`, as transports read them."""

    link: bool = False
    rsync: str = "rsync"
    timeout: float = 3600.0
    globus_endpoint: str | None = None
    #: Returns the Globus TransferClient, built on first use (it needs a token).
    globus_client: Callable[[], Any] = field(default=lambda: None)


class Batch:
    """Items one transport moves together; subclasses implement :meth:`run`."""

    def __init__(self, items: Sequence[TransferItem], options: TransferOptions) -> None:
        self.items = list(items)
        self.options = options

    def run(self) -> list[Outcome]:
        raise NotImplementedError
