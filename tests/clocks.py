"""A clock for tests: the store's ``clock`` and the launcher's take one, so leases, time-outs
and periodic jobs are tested by moving time, not by sleeping."""


class FakeClock:
    """A clock that moves only when told (``store.clock = FakeClock()``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
