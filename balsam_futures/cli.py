"""The ``balsam-futures`` command: thin over the library, one clear line per user mistake."""

from __future__ import annotations

import os
import sys

import click

from . import __name__ as _pkg
from .errors import BalsamFuturesError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    return tags


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=_pkg)
def main() -> None:
    """Run Python callables and shell applications from a task store."""


@main.command()
@click.option("--site", type=click.Path(file_okay=False), default=None,
              help="Site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures).")
@click.option("--db-url", default=None, help="Database URL instead of the site's SQLite file.")
@click.option("-n", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPUs of this machine).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Serve only tasks with this tag (repeatable).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds with nothing to run.")
@click.option("--lease", type=click.FloatRange(min=1), default=None,
              help="Seconds without a heartbeat after which this launcher's tasks are requeued.")
def launcher(site, db_url, workers, tags, idle_timeout, lease) -> None:
    """Start a launcher here: claim tasks from the store and run them until stopped."""
    from .launcher.pilot import LauncherConfig, run_launcher
    from .sitedir import open_site

    try:
        the_site = open_site(site)
        cfg = LauncherConfig(num_workers=workers or os.cpu_count() or 1,
                             tags=_parse_tags(tags), idle_timeout=idle_timeout,
                             lease_seconds=lease)
        count = run_launcher(db_url or the_site.db_url, cfg)
    except BalsamFuturesError as exc:
        _fail(exc)
    click.echo(f"launcher finished {count} task(s)")
