"""`balsam-futures db`: the site's own PostgreSQL server, and schema upgrades."""

from __future__ import annotations

import sys

import click

from ._common import STORE_OPTIONS, BalsamFuturesError, config, fail, with_options
from .main import main


@main.group()
def db() -> None:
    """The site's own PostgreSQL server (for many launchers on one store)."""


def _pg(site: str | None, run_as: str | None):
    from ..backends.pgserver import LocalPostgres
    from ..sitedir import open_site

    return LocalPostgres(open_site(site).path / "postgres", run_as=run_as)


_site_option = click.option("--site", type=click.Path(file_okay=False), default=None,
                            help="Site directory (default: $BALSAM_FUTURES_SITE or "
                                 "./.balsam_futures).")
_run_as_option = click.option("--run-as", default=None, metavar="USER",
                              help="Run the server as this unprivileged user (needed as root "
                                   "to create it; later, root finds that user as the owner of "
                                   "the server's data directory).")


@db.command("start")
@_site_option
@_run_as_option
def db_start(site, run_as) -> None:
    """Create (first time) and start the site's server; print its URL."""
    try:
        click.echo(_pg(site, run_as).start())
    except BalsamFuturesError as exc:
        fail(exc)


@db.command("stop")
@_site_option
@_run_as_option
def db_stop(site, run_as) -> None:
    """Stop the site's server (its port is kept for the next start)."""
    try:
        _pg(site, run_as).stop()
    except BalsamFuturesError as exc:
        fail(exc)
    click.echo("stopped")


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
        fail(exc)


@db.command("upgrade")
@with_options(STORE_OPTIONS)
def db_upgrade(site, db_url) -> None:
    """Bring the store's schema up to this version of balsam_futures (idempotent)."""
    from ..backends import open_store
    from ..sitedir import open_site

    try:
        store = open_store(db_url or config.setting("DB_URL") or open_site(site).db_url,
                           upgrade=True)
        version = store.schema_version
        store.close()
    except BalsamFuturesError as exc:
        fail(exc)
    click.echo(f"{store.display_url}: schema version {version}")
