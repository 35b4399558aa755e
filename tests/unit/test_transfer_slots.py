"""Transfer slots: the batches of one Transfers.run go at the same time, up to ``slots``
(a slow server does not hold up the other endpoints').  Proved with a barrier the batches
must meet at, not with timings."""

from __future__ import annotations

import threading

import pytest

from balsam_futures.staging import TransferItem, Transfers
from balsam_futures.staging.base import Batch, Outcome

pytestmark = pytest.mark.timeout(30)


class MeetingBatch(Batch):
    """A batch that succeeds only if every other batch runs at the same time."""

    barrier: threading.Barrier

    def run(self) -> list[Outcome]:
        self.barrier.wait()  # BrokenBarrierError after its timeout if run one at a time
        return [Outcome(copied=1) for _ in self.items]


def two_batches(transfers: Transfers, monkeypatch) -> list[TransferItem]:
    items = [TransferItem(1, "in", "/srv/a.dat", "/w1/a.dat"),
             TransferItem(2, "in", "/srv/b.dat", "/w2/b.dat")]
    MeetingBatch.barrier = threading.Barrier(2, timeout=2)
    monkeypatch.setattr(transfers, "_plan", lambda name, its, indexes: [
        (MeetingBatch([its[i]], transfers.options), [i]) for i in indexes])
    return items


def test_batches_of_one_run_go_at_the_same_time(monkeypatch):
    transfers = Transfers(slots=2)
    reports = transfers.run(two_batches(transfers, monkeypatch))
    assert {t: (r.error, r.copied) for t, r in reports.items()} == {1: (None, 1), 2: (None, 1)}


def test_one_slot_runs_them_one_after_the_other(monkeypatch):
    """(And a batch that raises fails its items with its words; nothing escapes.)"""
    transfers = Transfers(slots=1, retries=1, sleep=lambda _s: None)
    reports = transfers.run(two_batches(transfers, monkeypatch))
    assert all("BrokenBarrierError" in r.error for r in reports.values())


def test_slots_must_be_a_positive_int():
    with pytest.raises(ValueError, match="slots"):
        Transfers(slots=0)
