"""The ``balsam-futures`` command: thin over the library, one clear line per user mistake."""

from __future__ import annotations

import os
import sys

import click

from . import __name__ as _pkg
from . import config
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
def launcher(site, db_url, workers, tags, idle_timeout, lease) -> None:
    """Start a launcher here: claim tasks from the store and run them until stopped."""
    from .launcher.pilot import LauncherConfig, run_launcher
    from .sitedir import open_site

    try:
        the_site = open_site(site)
        cfg = LauncherConfig(num_workers=workers or os.cpu_count() or 1,
                             tags=_parse_tags(tags), idle_timeout=idle_timeout,
                             lease_seconds=lease, site=str(the_site.path))
        count = run_launcher(db_url or the_site.db_url, cfg)
    except BalsamFuturesError as exc:
        _fail(exc)
    click.echo(f"launcher finished {count} task(s)")


@main.group()
def db() -> None:
    """The site's own PostgreSQL server (for many launchers on one store)."""


def _pg(site: str | None, run_as: str | None):
    from .backends.pgserver import LocalPostgres
    from .sitedir import open_site

    return LocalPostgres(open_site(site).path / "postgres", run_as=run_as)


_site_option = click.option("--site", type=click.Path(file_okay=False), default=None,
                            help="Site directory (default: $BALSAM_FUTURES_SITE or "
                                 "./.balsam_futures).")
_run_as_option = click.option("--run-as", default=None, metavar="USER",
                              help="Run the server as this unprivileged user (needed as root).")


@db.command("start")
@_site_option
@_run_as_option
def db_start(site, run_as) -> None:
    """Create (first time) and start the site's server; print its URL."""
    try:
        click.echo(_pg(site, run_as).start())
    except BalsamFuturesError as exc:
        _fail(exc)


@db.command("stop")
@_site_option
@_run_as_option
def db_stop(site, run_as) -> None:
    """Stop the site's server."""
    try:
        _pg(site, run_as).stop()
    except BalsamFuturesError as exc:
        _fail(exc)


@db.command("status")
@_site_option
@_run_as_option
def db_status(site, run_as) -> None:
    """Say whether the site's server runs, and its URL."""
    try:
        server = _pg(site, run_as)
        if server.running():
            click.echo(f"running: {server.url()}")
        else:
            click.echo("stopped")
            sys.exit(3)
    except BalsamFuturesError as exc:
        _fail(exc)
