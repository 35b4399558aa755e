"""Helpers shared by the command modules: errors as one line, options, tables, filters."""

from __future__ import annotations

import sys

import click

from .. import config  # noqa: F401  (re-exported for the command modules)
from ..errors import BalsamFuturesError  # noqa: F401


def fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
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


def task_query(site, db_url, states=(), tags=(), name=None, ids=()):
    from ..query import TaskQuery

    q = TaskQuery.open(db_url=db_url, site=site)
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
