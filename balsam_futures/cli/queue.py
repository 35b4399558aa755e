"""`balsam-futures queue` (launcher batch jobs: submit, ls, rm) and `balsam-futures service`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from ._common import (
    JOB_MODE_NAMES,
    SCHEDULER_NAMES,
    STORE_OPTIONS,
    parse_tags,
    print_table,
    when,
    with_options,
)
from .main import main


@contextlib.contextmanager
def _manager(site, db_url, *, create: bool = True) -> Iterator:
    """The site's batch-job manager, its store closed on the way out; ``create=False``
    (commands that only look at or remove jobs) refuses a path with no site instead of
    creating one there."""
    from ..backends import open_store
    from ..schedulers.manager import BatchJobManager
    from ..sitedir import resolve_store_url

    url, the_site = resolve_store_url(db_url, site, create=create, with_site=True)
    store = open_store(url)
    try:
        # Job scripts name the store only when it is not the site's own file.
        yield BatchJobManager(store, the_site, db_url="" if url == the_site.db_url else url)
    finally:
        store.close()


@main.group()
def queue() -> None:
    """Launcher batch jobs: submit, list, remove (the site's settings.json sets the rules)."""


@queue.command("submit")
@with_options(STORE_OPTIONS)
@click.option("-n", "--num-nodes", type=click.IntRange(min=1), required=True,
              help="Nodes for the launcher job.")
@click.option("-t", "--wall-time-min", type=click.IntRange(min=1), required=True,
              help="Wall time in minutes.")
@click.option("-q", "--queue", "queue_name", default="",
              help="Queue / partition (default: the scheduler's).")
@click.option("-A", "--project", default="",
              help="Project / account charged (default: the site's settings.json).")
@click.option("--job-mode", type=click.Choice(JOB_MODE_NAMES), default="mpi",
              show_default=True, help="How the launcher runs tasks on the job's nodes.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="The launcher serves only tasks with this tag (repeatable).")
@click.option("--scheduler", type=click.Choice(SCHEDULER_NAMES), default=None,
              help="Batch system (default: the site's settings.json, else local).")
@click.option("--pre-run", multiple=True, metavar="COMMAND",
              help="A shell line the job runs before the launcher (repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Print the batch script and the backlog it would serve; submit nothing.")
def submit_cmd(site, db_url, num_nodes, wall_time_min, queue_name, project, job_mode, tags,
               scheduler, pre_run, dry_run=False) -> None:
    """Submit one launcher job, e.g. `queue submit -n 2 -t 30 -q debug -A myproj`."""
    from ..schedulers.base import BatchJobRequest

    options = {"pre_run": list(pre_run)} if pre_run else {}
    request = BatchJobRequest(num_nodes=num_nodes, wall_time_min=wall_time_min,
                              queue=queue_name, project=project, job_mode=job_mode,
                              filter_tags=parse_tags(tags), options=options,
                              scheduler=scheduler)
    if dry_run:
        _dry_run(site, db_url, request)
        return
    with _manager(site, db_url) as manager:
        job = manager.submit(request)
    click.echo(f"batch job {job['id']} submitted: {job['scheduler']} job "
               f"{job['scheduler_id']}")


def _dry_run(site, db_url, request) -> None:
    """`queue submit --dry-run`: the script a submit would write, then the backlog."""
    from ..schedulers.service import dry_run

    with _manager(site, db_url) as manager:
        shown = dry_run(manager, request)
    b, w = shown.backlog, shown.work
    click.echo(shown.script.rstrip("\n"))
    click.echo("")
    click.echo(f"# dry run: nothing submitted.  Backlog for {request.num_nodes} node(s) x "
               f"{request.wall_time_min} min: {b.tasks} claimable task(s)"
               + (f", {b.too_large} too large for this job" if b.too_large else ""))
    click.echo(f"#   expected work {w.node_seconds / 3600:.2f} node-hour(s), longest task "
               f"{w.longest_s:.0f} s; {w.unknown_nodes:.2f} node(s) of tasks of unknown "
               "run time")
    click.echo(f"#   nodes that finish the expected work in the wall time: "
               f"{shown.nodes_for_work:.2f}")


@queue.command("ls")
@with_options(STORE_OPTIONS)
@click.option("--history", is_flag=True, help="Also jobs that ended or failed to submit.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also times, the scheduler's state and errors.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def ls_cmd(site, db_url, history, verbose, as_json) -> None:
    """List launcher batch jobs (their states are refreshed from the scheduler first)."""
    import json

    with _manager(site, db_url, create=False) as manager:
        synced = manager.sync()
        rows = manager.jobs(history=history)
    for name, error in synced.errors.items():
        click.echo(f"warning: states of {name} jobs not refreshed: {error}", err=True)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if verbose:
        for r in rows:
            click.echo(f"{r['id']} {r['scheduler']} {r['scheduler_id'] or '-'} {r['state']}")
            details = {
                "queue": r["queue"], "project": r["project"], "nodes": r["num_nodes"],
                "wall time": f"{r['wall_time_min']} min", "job mode": r["job_mode"],
                "tags": ",".join(f"{k}={v}" for k, v in r["filter_tags"].items()),
                "submitted": when(r["created_at"]), "started": when(r["started_at"]),
                "ended": when(r["ended_at"]),
                "scheduler says": ", ".join(f"{k}={v}" for k, v in r["status_info"].items()),
                "error": r["error"], "script": r["script_path"]}
            for key, value in details.items():
                if value not in ("", None):
                    click.echo(f"  {key:>14}: {value}")
        return
    print_table(["id", "scheduler", "sched id", "queue", "project", "nodes", "minutes",
                 "mode", "state", "tags"],
                [[r["id"], r["scheduler"], r["scheduler_id"], r["queue"], r["project"],
                  r["num_nodes"], r["wall_time_min"], r["job_mode"], r["state"],
                  ",".join(f"{k}={v}" for k, v in r["filter_tags"].items())] for r in rows])


@queue.command("rm")
@with_options(STORE_OPTIONS)
@click.argument("job_id", type=int)
def rm_cmd(site, db_url, job_id) -> None:
    """Remove a queued or running launcher job from the scheduler."""
    with _manager(site, db_url, create=False) as manager:
        job = manager.remove(job_id)
    click.echo(f"batch job {job_id}: removal requested ({job['scheduler']} job "
               f"{job['scheduler_id']})")


@main.command("service")
@with_options(STORE_OPTIONS)
@click.option("--once", is_flag=True, help="Run one tick and exit (status 1 on errors).")
def service_cmd(site, db_url, once) -> None:
    """Keep launcher jobs queued while tasks wait (the "service" of settings.json)."""
    import signal
    import threading
    import time

    from ..schedulers.service import QueueService

    with _manager(site, db_url) as manager:
        svc = QueueService(manager)
        if once:
            report = svc.tick()
            click.echo(report.summary())
            if report.errors:
                sys.exit(1)
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: stop.set())
        click.echo(f"queue service: a tick every {svc.settings.interval_s:g} s; "
                   "stop with Ctrl-C")
        svc.run(stop, on_tick=lambda r: click.echo(f"{when(time.time())}  {r.summary()}"))
