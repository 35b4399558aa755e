"""Helpers shared by the command modules: errors as one line, options, tables, filters."""

from __future__ import annotations

import sys

import click

from .. import config  # (also re-exported for the command modules)
from ..errors import BalsamFuturesError

#: What a user's mistake raises (a bad option value, setting, URL, state move or site): one
#: ``error:`` line and exit status 1, not a traceback.
USER_ERRORS = (BalsamFuturesError, ValueError, TypeError)


def fail(exc: Exception) -> None:
    """Print ``exc`` as one ``error:`` line (any password in it masked) and exit 1."""
    from ..backends import redact_url

    click.echo(f"error: {redact_url(str(exc))}", err=True)
    sys.exit(1)


def parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    return tags


STORE_OPTIONS = [
    click.option("--site", type=click.Path(file_okay=False), default=None,
                 help="Site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures)."),
    click.option("--db-url", default=None, help="Database URL (default: "
                                                "$BALSAM_FUTURES_DB_URL, else the site's)."),
]
FILTER_OPTIONS = [
    click.option("-s", "--state", "states", multiple=True, help="Task state (repeatable)."),
    click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE",
                 help="Tag to match (repeatable)."),
    click.option("-n", "--name", default=None, help="Task name."),
    click.option("-i", "--id", "ids", multiple=True, type=int, help="Task id (repeatable)."),
]


def with_options(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def store_url(site: str | None, db_url: str | None) -> str:
    """The store these commands use: ``--db-url``, else $BALSAM_FUTURES_DB_URL, else the
    database of an existing site (no site there is an error: nothing is created)."""
    from ..sitedir import find_site

    return db_url or config.setting("DB_URL") or find_site(site).db_url


def task_query(site, db_url, states=(), tags=(), name=None, ids=()):
    from ..query import TaskQuery

    q = TaskQuery.open(db_url=store_url(site, db_url))
    conditions: dict = {}
    if states:
        conditions["state__in"] = list(states)
    if tags:
        conditions["tags"] = parse_tags(tags)
    if name:
        conditions["name"] = name
    if ids:
        conditions["id__in"] = list(ids)
    return q.filter(**conditions)


def print_table(columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console(soft_wrap=True).print(table)


def when(t: float | None) -> str:
    import datetime

    return "" if t is None else datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
