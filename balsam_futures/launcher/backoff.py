"""The one back-off rule of every poller: how long to wait before looking again.

    found nothing  ->  back_off(wait, longest)    twice the last wait, at most ``longest``
    any look       ->  next_poll(poll, quiet, shortest, longest, active)
                       ``shortest`` while the last activity is under ``active`` s old,
                       else back_off

Used by the launcher's store thread (control.py: its polls and its retries while the store
is unreachable), the agents' relay and the agents themselves (agents/: MPI has no descriptor
to sleep on) and the executor's watcher (futures.py).  Each caller keeps its own constants,
with their trade-offs, next to its loop.
"""

from __future__ import annotations


def back_off(wait: float, longest: float) -> float:
    """The wait after ``wait`` found nothing: doubled, up to ``longest``."""
    return min(wait * 2, longest)


def next_poll(poll: float, quiet: float, shortest: float, longest: float,
              active: float) -> float:
    """The next poll interval after ``poll``, ``quiet`` seconds after the last activity:
    ``shortest`` while that is under ``active`` seconds, else ``back_off(poll, longest)``."""
    return shortest if quiet < active else back_off(poll, longest)
