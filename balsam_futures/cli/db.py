"""`balsam-futures db`: the site's own PostgreSQL server, and schema upgrades."""

from __future__ import annotations

import sys

import click

from ._common import SITE_OPTION, STORE_OPTIONS, with_options
from .main import main


@main.group()
def db() -> None:
    """The site's own PostgreSQL server (for many launchers on one store)."""


def _pg(site: str | None, run_as: str | None):
    from ..backends.pgserver import LocalPostgres
    from ..sitedir import open_site

    return LocalPostgres(open_site(site).path / "postgres", run_as=run_as)


_run_as_option = click.option("--run-as", default=None, metavar="USER",
                              help="Run the server as this unprivileged user (needed as root "
                                   "to create it; later, root finds that user as the owner of "
                                   "the server's data directory).")


@db.command("start")
@SITE_OPTION
@_run_as_option
@click.option("--listen", default=None, metavar="HOST[:PORT]",
              help="Listen on TCP too, at this address of this machine (0.0.0.0: every "
                   "interface), for "
                   "launchers on other nodes: scram-sha-256 passwords only, the generated "
                   "password kept in the site's pgpass file (`balsam-futures env` points "
                   "PGPASSFILE at it).  Kept by later starts.")
@click.option("--allow", default=None, metavar="NETWORK",
              help="With --listen: the clients' network allowed on TCP, e.g. 10.0.0.0/16 "
                   "(default: the --listen address alone; required with --listen 0.0.0.0).")
@click.option("--unix-only", is_flag=True, default=False,
              help="Stop listening on TCP (forget an earlier --listen).")
def db_start(site, run_as, listen, allow, unix_only) -> None:
    """Create (first time) and start the site's server; print its URL (never a password)."""
    from ..backends.pgserver import Listen

    if allow is not None and listen is None:
        raise click.UsageError("--allow goes with --listen HOST[:PORT]")
    if unix_only and listen is not None:
        raise click.UsageError("--unix-only and --listen contradict each other")
    try:
        where = Listen.parse(listen, allow) if listen is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen/--allow") from None
    server = _pg(site, run_as)
    click.echo(server.start(where, unix_only=unix_only))
    if server.listening() is not None:
        click.echo(f"password in {server.pgpass_file}: use it with "
                   f"eval \"$(balsam-futures env {server.path.parent})\"", err=True)


@db.command("stop")
@SITE_OPTION
@_run_as_option
def db_stop(site, run_as) -> None:
    """Stop the site's server (its port is kept for the next start)."""
    _pg(site, run_as).stop()
    click.echo("stopped")


@db.command("status")
@SITE_OPTION
@_run_as_option
def db_status(site, run_as) -> None:
    """Say whether the site's server runs, and its URL."""
    server = _pg(site, run_as)
    if not server.running():
        click.echo("stopped")
        sys.exit(3)
    click.echo(f"running: {server.tcp_url() or server.url()}")


@db.command("upgrade")
@with_options(STORE_OPTIONS)
def db_upgrade(site, db_url) -> None:
    """Bring the store's schema up to this version of balsam_futures (idempotent)."""
    from ..backends import open_store
    from ..sitedir import resolve_store_url

    store = open_store(resolve_store_url(db_url, site)[0], upgrade=True)
    try:
        version = store.schema_version
    finally:
        store.close()
    click.echo(f"{store.display_url}: schema version {version}")
