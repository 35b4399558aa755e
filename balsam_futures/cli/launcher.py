"""`balsam-futures launcher`: run a launcher here."""

from __future__ import annotations

import os

import click

from .. import config
from ._common import (
    BalsamFuturesError,
    fail,
    parse_tags,
)
from .main import main


@main.command()
@click.option("--site", type=click.Path(file_okay=False), default=None,
              help="Site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures).")
@click.option("--db-url", default=lambda: config.setting("DB_URL"),
              help="Database URL instead of the site's SQLite file (default: "
                   "$BALSAM_FUTURES_DB_URL; a password given here shows in `ps`, so prefer "
                   "the variable or ~/.pgpass).")
@click.option("-n", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPUs of this machine).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Serve only tasks with this tag (repeatable).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds with nothing to run.")
@click.option("--lease", type=click.FloatRange(min=1), default=None,
              help="Seconds without a heartbeat after which this launcher's tasks are requeued.")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs to share among the workers, none shared (default: detected).")
def launcher(site, db_url, workers, tags, idle_timeout, lease, gpus) -> None:
    """Start a launcher here: claim tasks from the store and run them until stopped."""
    from ..launcher.pilot import LauncherConfig, run_launcher
    from ..sitedir import open_site

    try:
        the_site = open_site(site)
        cfg = LauncherConfig(num_workers=workers or os.cpu_count() or 1,
                             tags=parse_tags(tags), idle_timeout=idle_timeout,
                             lease_seconds=lease, site=str(the_site.path),
                             gpu_ids=None if gpus is None else tuple(map(str, range(gpus))))
        count = run_launcher(db_url or the_site.db_url, cfg)
    except BalsamFuturesError as exc:
        fail(exc)
    click.echo(f"launcher finished {count} task(s)")
