"""Asynchronous Bayesian hyper-parameter search, in the style of DeepHyper's centralized search.

    python examples/deephyper_like/search.py [--budget 40] [--workers N] [--campaign NAME]
                                             [--site DIR] [--plot FILE] [--seed S]

    master (this script)                      store (SQLite in ./.balsam_futures)     launcher
    --------------------                      -----------------------------------     --------
    study.ask() -> config ── ex.submit ──>    task row: tags {campaign}, data config ─> worker:
    keeps N evaluations in flight                                                     train MLP
    wait(FIRST_COMPLETED) <── future ──────   result or error (Diverged) <────────────────┘
    study.tell(result) and ask again at once: no batch barriers

The optimizer is Optuna's TPE through ask/tell; the objective is the validation accuracy of a
small neural network on scikit-learn's bundled digits (``digits_model.py``).  Configurations
that diverge fail; their errors are recorded in the store and counted, and the search goes on.

Every task carries the campaign tag and its configuration as ``data``, so the store alone can
rebuild the search: stop this script (Ctrl-C, or kill -9) and run the same command again.  It
re-attaches to the campaign's tasks, tells the finished ones to a new optimizer, waits on
those still running and submits new ones until the budget is spent.  After Ctrl-C the master
first lets its running evaluations finish; after kill -9 its launcher stops them and hands
them back to the store, and the next run's launcher runs them again (the same tasks: each
configuration still has one task and one result, and its history shows the restart).

Evaluations are submitted with ``cache=True``: a configuration evaluated before, by this
campaign or any other in the same store, is answered from the stored result instead of being
trained again (a campaign started with the same ``--seed`` replays its first, random, points
from the cache).  The summary says how many answers came from the cache.

Needs the packages in ``requirements.txt`` next to this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import signal
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import matplotlib
    import optuna
except ImportError as exc:
    sys.exit(f"this example needs {exc.name}: pip install -r "
             f"{Path(__file__).with_name('requirements.txt')}")

import digits_model  # next to this script; the workers import it from there too

from balsam_futures import BalsamExecutor, LauncherBroken, Resources
from balsam_futures.launcher.nodes import discover_nodes

#: The search space.  Learning rates above about 0.3 with high momentum diverge: that corner
#: is left in on purpose, so that some evaluations fail.
SPACE: dict[str, optuna.distributions.BaseDistribution] = {
    "learning_rate_init": optuna.distributions.FloatDistribution(1e-3, 2.0, log=True),
    "momentum": optuna.distributions.FloatDistribution(0.5, 0.99),
    "hidden_units": optuna.distributions.IntDistribution(16, 256, log=True),
    "alpha": optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True),
}

#: Task name in the store (``balsam-futures ls --name evaluate``).
TASK_NAME = "evaluate"


@dataclass
class Record:
    """One evaluation of the campaign, as the master knows it."""

    task_id: int
    config: dict[str, Any]
    accuracy: float | None = None  # None: failed
    error: str = ""
    gpu: str | None = None  # the GPU it ran on, if any


@dataclass
class Campaign:
    """The master's view of one search: the optimizer, what is in flight, what came back."""

    tag: str
    budget: int
    study: optuna.Study
    inflight: dict[Future, tuple[optuna.trial.Trial, Record]] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    submitted: int = 0  # tasks of this campaign in the store, from earlier runs too

    @property
    def best(self) -> Record | None:
        good = [r for r in self.records if r.accuracy is not None]
        return max(good, key=lambda r: r.accuracy) if good else None

    def tell(self, fut: Future) -> None:
        """Give a finished evaluation's result (or failure) to the optimizer and print it."""
        trial, record = self.inflight.pop(fut)
        seconds = None
        try:
            outcome = fut.result()
        except LauncherBroken:
            raise  # not the evaluation's fault: stop, and let the next run pick it up
        except CancelledError:  # e.g. `balsam-futures kill` on a task that had not started
            record.error = "CancelledError: cancelled before it ran"
        except Exception as exc:  # the evaluation's own error, rebuilt from the store
            record.error = f"{type(exc).__name__}: {exc}"
        else:
            record.accuracy, seconds = outcome["accuracy"], outcome["seconds"]
            record.gpu = outcome.get("gpu")
        if record.accuracy is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, record.accuracy)
        self.records.append(record)
        self._print(record, seconds)

    def _print(self, record: Record, seconds: float | None) -> None:
        width = len(str(self.budget))
        head = f"[{len(self.records):>{width}}/{self.budget}] task {record.task_id:<5}"
        if record.accuracy is None:
            print(f"{head} FAILED        {record.error}")
            return
        best = self.best
        took = f"  ({seconds:.1f} s" + (f" on GPU {record.gpu})" if record.gpu else ")")
        print(f"{head} accuracy {record.accuracy:.4f}  best {best.accuracy:.4f} | "
              f"{describe(record.config)}{took}")


def describe(config: dict[str, Any]) -> str:
    return (f"lr {config['learning_rate_init']:.3g}  momentum {config['momentum']:.2f}  "
            f"units {config['hidden_units']}  alpha {config['alpha']:.2g}")


def resume(ex: BalsamExecutor, campaign: Campaign) -> None:
    """Re-attach to the campaign's tasks in the store: tell the finished ones, track the rest.

    Each task's configuration comes back from its ``data``; it is enqueued in the new study so
    that the trial carries exactly that point, then told (finished) or kept in flight.
    """
    futures = ex.attach(tags={"campaign": campaign.tag})
    if not futures:
        return
    print(f"re-attached to the {len(futures)} task(s) of campaign {campaign.tag!r} in the store")
    configs = {row["id"]: row["data"] for row in
               ex.tasks().filter(tags={"campaign": campaign.tag})}
    running = 0
    for fut in futures:
        campaign.study.enqueue_trial(configs[fut.task_id])
        trial = campaign.study.ask(SPACE)
        campaign.inflight[fut] = (trial, Record(fut.task_id, trial.params))
        if fut.done():
            campaign.tell(fut)
        else:
            running += 1
    campaign.submitted = len(futures)
    failed = sum(r.accuracy is None for r in campaign.records)
    print(f"resumed: {len(campaign.records)} evaluation(s) done ({failed} failed), "
          f"{running} still running, {max(0, campaign.budget - campaign.submitted)} to submit")
    if campaign.submitted >= campaign.budget:
        print(f"campaign {campaign.tag!r} has spent its budget: its {len(futures)} answer(s) "
              f"came from the store without a run ({cached_count(ex, campaign)} of them from "
              "the cache); give a larger --budget to go on, or another --campaign name to "
              "start a new search")


def cached_count(ex: BalsamExecutor, campaign: Campaign) -> int:
    """The campaign's evaluations answered from the cache: an identical configuration had
    been evaluated before (its task records the one whose result it took)."""
    return ex.tasks().filter(tags={"campaign": campaign.tag}, cached_from__ne=None).count()


def search(ex: BalsamExecutor, campaign: Campaign, slots: int, gpus: bool) -> None:
    """Keep ``slots`` evaluations in flight until the budget is spent and all have returned."""
    # cache=True: a configuration evaluated before (here or in another campaign of this
    # store) is answered from its stored result, not trained again.
    run = ex.options(name=TASK_NAME, tags={"campaign": campaign.tag}, cache=True)
    if gpus:
        run = run.options(resources=Resources(gpus_per_rank=1))
    while campaign.inflight or campaign.submitted < campaign.budget:
        while campaign.submitted < campaign.budget and len(campaign.inflight) < slots:
            trial = campaign.study.ask(SPACE)
            fut = run.options(data=trial.params).submit(digits_model.evaluate, trial.params)
            campaign.inflight[fut] = (trial, Record(fut.task_id, trial.params))
            campaign.submitted += 1
        done, _ = wait(list(campaign.inflight), return_when=FIRST_COMPLETED)
        for fut in done:
            campaign.tell(fut)


def plot(ex: BalsamExecutor, campaign: Campaign, path: Path) -> None:
    """Objective vs. time since the campaign began, from the store's timestamps (so a
    resumed campaign is drawn whole), with the best so far as a line."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["id"]: row for row in ex.tasks().filter(tags={"campaign": campaign.tag})}
    start = min(row["created_at"] for row in rows.values())
    done = sorted(campaign.records, key=lambda r: rows[r.task_id]["updated_at"])
    at = [rows[r.task_id]["updated_at"] - start for r in done]
    fig, ax = plt.subplots(figsize=(7, 4))
    ok = [(t, r.accuracy) for t, r in zip(at, done) if r.accuracy is not None]
    failed = [t for t, r in zip(at, done) if r.accuracy is None]
    if ok:
        ax.scatter(*zip(*ok), s=18, label="evaluation")
        best, line = -math.inf, []
        for t, acc in ok:
            best = max(best, acc)
            line.append((t, best))
        ax.step(*zip(*line), where="post", color="C1", label="best so far")
        low = min(acc for _, acc in ok)
    else:
        low = 0.0
    if failed:
        ax.scatter(failed, [low] * len(failed), marker="x", color="C3",
                   label=f"failed ({len(failed)})")
    ax.set_xlabel("seconds since the campaign started")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"campaign {campaign.tag}: {len(done)} evaluations")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(campaign: Campaign, elapsed: float, site: Path | None, plot_path: Path,
              cached: int = 0) -> None:
    failures = Counter(r.error.split(":", 1)[0] for r in campaign.records if r.accuracy is None)
    failed = ", ".join(f"{n} {kind}" for kind, n in failures.most_common()) or "none"
    print(f"\n{len(campaign.records)} evaluation(s) in campaign {campaign.tag!r}, "
          f"failed: {failed}; {cached} answered from the cache (no run); this run took "
          f"{elapsed:.1f} s")
    best = campaign.best
    if best is None:
        print("no evaluation succeeded")
    else:
        print(f"best: accuracy {best.accuracy:.4f} (task {best.task_id}): "
              + ", ".join(f"{k}={v:.4g}" for k, v in best.config.items()))
    print(f"plot: {plot_path}")
    where = f" --site {site}" if site is not None else ""
    print(f"the tasks: balsam-futures ls{where} --tag campaign={campaign.tag}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=40, help="total evaluations (default 40)")
    parser.add_argument("--workers", type=int, default=None,
                        help="evaluations at once (default: one per GPU, else one per core)")
    parser.add_argument("--campaign", default="digits-mlp",
                        help="tag of this search's tasks; the same name resumes it")
    parser.add_argument("--site", default=None,
                        help="site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG of accuracy vs. time (default: CAMPAIGN.png)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the optimizer's sampling (default: random)")
    args = parser.parse_args(argv)
    if args.budget < 1:
        parser.error("--budget must be at least 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.plot is None:
        args.plot = Path(f"{args.campaign}.png")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("sklearn") is None:  # the workers import it; found, not loaded
        sys.exit("this example needs scikit-learn: pip install -r "
                 f"{Path(__file__).with_name('requirements.txt')}")
    sys.stdout.reconfigure(line_buffering=True)  # one line per result, also into a pipe
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    # The same detection the executor's launcher uses: with GPUs, one evaluation per GPU.
    gpu_ids = discover_nodes(name="local")[0].gpus
    workers = args.workers or len(gpu_ids) or os.cpu_count() or 1
    use_gpus = len(gpu_ids) >= workers  # every worker owns a GPU: ask for one per task

    start = time.monotonic()
    ex = BalsamExecutor(max_workers=workers, site=args.site, gpus=gpu_ids,
                        initializer=digits_model.load_data)
    # A seed offset by the tasks already stored: a sampler seeded as in the first run would
    # propose the first run's random points again.
    stored = ex.tasks().filter(tags={"campaign": args.campaign}).count()
    sampler = optuna.samplers.TPESampler(
        seed=None if args.seed is None else args.seed + stored,
        constant_liar=True)  # running trials count as mediocre: N in flight spread out
    campaign = Campaign(args.campaign, args.budget,
                        optuna.create_study(direction="maximize", sampler=sampler))
    print(f"campaign {args.campaign!r}: {args.budget} evaluations, {workers} at a time"
          + (", one GPU each" if use_gpus else "") + f"; store {ex.store.display_url}")
    try:
        resume(ex, campaign)
        search(ex, campaign, workers, use_gpus)
        plot(ex, campaign, args.plot)
        summarize(campaign, time.monotonic() - start, ex.site, args.plot,
                  cached_count(ex, campaign))
    except KeyboardInterrupt:
        # A second Ctrl-C exits at once, wherever it lands.  The launcher sees this process
        # go, stops its workers and hands their tasks back to the store; the next run runs
        # them again.
        signal.signal(signal.SIGINT, lambda _sig, _frame: os._exit(130))
        print("\ninterrupted: waiting for the running evaluations to finish and be recorded "
              "(Ctrl-C again to leave them to the next run); run the same command again to "
              "continue", flush=True)
        ex.shutdown(wait=True)
        return 130
    except LauncherBroken as exc:
        print(f"stopped: {exc}; run the same command again to continue", file=sys.stderr)
        return 1
    finally:
        ex.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
