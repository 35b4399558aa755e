"""Site commands: init, env."""

from __future__ import annotations

import click

from .. import config
from .main import main


@main.command("env")
@click.argument("site", type=click.Path(file_okay=False), required=False)
def env_cmd(site) -> None:
    """Print the shell line that points balsam-futures at a site:
    eval "$(balsam-futures env DIR)"."""
    import shlex

    from ..sitedir import open_site

    the_site = open_site(site)
    path = the_site.path
    click.echo(f"export {config.env_name('SITE')}={shlex.quote(str(path))}")
    if the_site.pgpass_file.exists():  # the site's server listens on TCP: libpq's password
        click.echo(f"export PGPASSFILE={shlex.quote(str(the_site.pgpass_file))}")


@main.command("init")
@click.argument("site", type=click.Path(file_okay=False), required=False)
def init_cmd(site) -> None:
    """Create a site (database, data/, logs/) and say how to use it."""
    from ..query import TaskQuery
    from ..sitedir import open_site

    path = open_site(site).path
    TaskQuery.open(site=str(path)).store.close()  # creates the database
    click.echo(f"site ready: {path}\nuse it with: eval \"$(balsam-futures env {path})\"")
