"""Quick start: a Monte Carlo estimate of pi on BalsamExecutor, the embedded default.

    python examples/quickstart.py [--tasks 200] [--samples 200000] [--workers 2]

Every task is a row in the SQLite store under ./.balsam_futures (or $BALSAM_FUTURES_SITE);
a local launcher runs them in warm worker processes.  One task in fifty is made to fail, to
show that a failure is recorded, not fatal.  At the end the script reads the store back:
counts by state and the history of the failed task.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import as_completed

from balsam_futures import BalsamExecutor


def sample_pi(seed: int, samples: int) -> tuple[int, int]:
    """Throw ``samples`` darts at the unit square; return (hits inside the circle, samples)."""
    if seed % 50 == 49:
        raise RuntimeError(f"simulated failure in task with seed {seed}")
    rng = random.Random(seed)
    hits = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return hits, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    start = time.monotonic()
    hits = total = failed = 0
    with BalsamExecutor(max_workers=args.workers) as ex:
        run = ex.options(tags={"example": "quickstart"})
        futures = {run.submit(sample_pi, seed, args.samples): seed for seed in range(args.tasks)}
        for done, fut in enumerate(as_completed(futures), 1):
            try:
                h, n = fut.result()
            except RuntimeError as exc:
                failed += 1
                failed_id = fut.task_id
                print(f"  task {fut.task_id} failed: {exc}")
                continue
            hits, total = hits + h, total + n
            if done % max(1, args.tasks // 10) == 0:
                print(f"  {done}/{args.tasks} done, pi ~ {4 * hits / total:.6f}")
        counts = ex.store.count_by_state()
        history = ex.store.history(failed_id) if failed else []
        site = ex.site

    print(f"\npi ~ {4 * hits / total:.6f} from {total:,} samples in "
          f"{time.monotonic() - start:.1f} s ({failed} task(s) failed, as planned)")
    print(f"store {site}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if history:
        print(f"history of failed task {failed_id}:")
        for row in history:
            print(f"  {row['from_state'] or '':>14} -> {row['to_state']:<14} {row['message']}")


if __name__ == "__main__":
    main()
