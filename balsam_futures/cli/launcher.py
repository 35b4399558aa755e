"""`balsam-futures launcher`: run a launcher here."""

from __future__ import annotations

import click

from ._common import (
    JOB_MODE_NAMES,
    MPI_LAUNCHERS,
    PLATFORMS,
    STORE_OPTIONS,
    parse_tag_choices,
    with_options,
)
from .main import main


@main.command()
@with_options(STORE_OPTIONS)
@click.option("-n", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPUs of this machine).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Serve only tasks with this tag (repeatable: a key given twice "
                   "serves either value).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds with nothing to run.")
@click.option("--lease", type=click.FloatRange(min=1), default=None,
              help="Seconds without a heartbeat after which this launcher's tasks are requeued.")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs of this node to give to tasks, none shared (default: detected).")
@click.option("--platform", type=click.Choice(PLATFORMS),
              default=None, help="Where to find the allocation's nodes (default: detected "
                                 "from the batch system's variables, else local).")
@click.option("--nodes", "num_nodes", type=click.IntRange(min=1), default=None,
              help="local platform: act as this many virtual nodes (tests, simulations).")
@click.option("--cores-per-node", type=click.IntRange(min=1), default=None,
              help="Cores per node (default: what the batch system says).")
@click.option("--gpus-per-node", type=click.IntRange(min=0), default=None,
              help="GPUs per node (default: what the batch system or the driver says).")
@click.option("--job-mode", type=click.Choice(JOB_MODE_NAMES), default="serial",
              show_default=True, help="serial: one-rank tasks in warm workers on this node; "
                                      "mpi: every task started with the MPI launcher.")
@click.option("--mpi-launcher", type=click.Choice(MPI_LAUNCHERS), default=None,
              help="How tasks of several ranks start (default: detected).")
@click.option("--wall-time-min", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many minutes (the batch job's wall time); runs still "
                   "going are stopped as RUN_TIMEOUT and retried.")
@click.option("--batch-job-id", type=int, default=None,
              help="The batch job this launcher runs in (recorded with it).")
@click.option("--agents/--no-agents", default=None,
              help="serial mode: run one-rank tasks on the other nodes in warm workers of a "
                   "per-node agent (started with the MPI launcher) instead of one MPI launch "
                   "each (default: on for a batch system's nodes, off for --nodes).")
@click.option("--simulate", is_flag=True, default=False,
              help="Simulated execution, for benchmarks and capacity planning: runs start "
                   "no process; each lasts the seconds in its task's data['sim_seconds'] "
                   "(default 0) and returns data['sim_result'] (default None), or raises if "
                   "data['sim_fail'] is set.  Claims, placement on the nodes (--nodes, "
                   "--cores-per-node, --gpus-per-node) and every store write are real.")
def launcher(site, db_url, workers, tags, idle_timeout, lease, gpus, platform, num_nodes,
             cores_per_node, gpus_per_node, job_mode, mpi_launcher, wall_time_min,
             batch_job_id, agents, simulate) -> None:
    """Start a launcher here: claim tasks from the store and run them until stopped."""
    from ..launcher.allocation import default_workers, find_allocation
    from ..launcher.config import LauncherConfig
    from ..launcher.pilot import run_launcher
    from ..sitedir import resolve_store_url

    # First, so that a refused shape (--nodes on a batch system's nodes) creates no site.
    nodes, local = find_allocation(platform, num_nodes=num_nodes, cores_per_node=cores_per_node,
                                   gpus_per_node=gpus_per_node)
    # The site always: the launcher's logs go there, even when the store is at a URL.
    url, the_site = resolve_store_url(db_url, site, with_site=True)
    if workers is None:
        workers = default_workers(nodes, local, job_mode, agents)
    cfg = LauncherConfig(num_workers=workers,
                         tags=parse_tag_choices(tags), idle_timeout=idle_timeout,
                         lease_seconds=lease, site=str(the_site.path),
                         gpu_ids=None if gpus is None else tuple(map(str, range(gpus))),
                         nodes=nodes, local_nodes=local, job_mode=job_mode,
                         mpi_launcher=mpi_launcher, wall_time_min=wall_time_min,
                         batch_job_id=batch_job_id, agents=agents, simulate=simulate)
    count = run_launcher(url, cfg)
    click.echo(f"launcher finished {count} task(s)")
