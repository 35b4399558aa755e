"""`balsam-futures stats`: throughput and utilization from the execution profile."""

from __future__ import annotations

import json
import time

import click

from ._common import STORE_OPTIONS, open_tasks, print_table, with_options
from .main import main


@main.command("stats")
@with_options(STORE_OPTIONS)
@click.option("--since", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Only the last SECONDS (default: everything recorded).")
@click.option("--bins", type=click.IntRange(min=1, max=10_000), default=100, show_default=True,
              help="Time bins of the utilization curve.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.png", help="Also draw utilization and throughput (needs "
                                       "matplotlib: the plot extra).")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.option("--kinds", "kinds", is_flag=True,
              help="The run-time estimates per kind of task instead (runs, median, p90).")
def stats_cmd(site, db_url, since, bins, plot_path, as_json, kinds=False) -> None:
    """Throughput, node and GPU utilization, and task counts by state."""
    from ..utilization import plot_profile, store_profile

    if kinds:
        _show_kinds(site, db_url, as_json)
        return

    start = time.time() - since if since is not None else None
    with open_tasks(site, db_url) as q:
        prof = store_profile(q.store, start=start, bins=bins)
        counts = q.store.count_by_state()
        cache = q.store.cache_counts()
    if plot_path:
        plot_profile(prof, plot_path)
    summary = {**prof.summary(), "states": counts, "cache": cache}
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    print_table(["measure", "value"], [
        ["runs recorded", prof.runs],
        ["time span", f"{prof.end - prof.start:.1f} s"],
        ["throughput", f"{prof.throughput():.2f} tasks/s"],
        ["node utilization", f"{prof.mean_node_utilization():.1%}"],
        ["GPU utilization", f"{prof.mean_gpu_utilization():.1%}" if any(prof.total_gpus)
         else "no GPUs"],
        *[[f"tasks {state}", n] for state, n in sorted(counts.items())],
        ["cache hits", cache["hits"]],
        ["cache misses", cache["misses"]],
        *([["cache followers waiting", cache["following"]]] if cache["following"] else []),
    ])
    if plot_path:
        click.echo(f"plot written to {plot_path}")


def _show_kinds(site, db_url, as_json: bool) -> None:
    """`stats --kinds`: each kind's run-time estimate, learned from its finished runs."""
    with open_tasks(site, db_url) as q:
        kinds = q.store.kind_estimates()
    if as_json:
        click.echo(json.dumps(kinds, sort_keys=True))
        return
    if not kinds:
        click.echo("no run-time estimates yet (they are learned as runs finish)")
        return
    print_table(["kind", "runs", "median", "p90"], [
        [k["key"], k["count"], f"{k['median_s']:.3g} s", f"{k['p90_s']:.3g} s"]
        for k in kinds])
