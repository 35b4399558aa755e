"""Helpers shared by the command modules: errors as one line, options, tables, filters."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from ..errors import BalsamFuturesError
from ..launcher.config import JOB_MODES
from ..launcher.mpi import launcher_names
from ..launcher.nodes import DETECTION_ORDER
from ..schedulers import SCHEDULERS

if TYPE_CHECKING:
    from ..query import TaskQuery

#: What a user's mistake raises (a bad option value, setting, URL, state move or site; a
#: missing optional module; a file that cannot be written): one ``error:`` line and exit
#: status 1, not a traceback.  Caught for every command in one place, ``main``'s ``invoke``.
USER_ERRORS = (BalsamFuturesError, ValueError, TypeError, ImportError, OSError)

#: Choices of the options that name a registered implementation, read from the registries.
MPI_LAUNCHERS = launcher_names()
PLATFORMS = list(DETECTION_ORDER)
SCHEDULER_NAMES = list(SCHEDULERS)
#: How a launcher runs tasks: `launcher --job-mode` and `queue submit --job-mode` alike.
JOB_MODE_NAMES = list(JOB_MODES)


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


def parse_tag_choices(values: tuple[str, ...]) -> dict[str, str | tuple[str, ...]]:
    """``--tag`` options where a key given twice matches either value: a key's one value,
    or a tuple of its values (in the order given)."""
    choices: dict[str, list[str]] = {}
    for item in values:
        key, value = next(iter(parse_tags((item,)).items()))
        if value not in choices.setdefault(key, []):
            choices[key].append(value)
    return {k: v[0] if len(v) == 1 else tuple(v) for k, v in choices.items()}


SITE_OPTION = click.option(
    "--site", type=click.Path(file_okay=False), default=None,
    help="Site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures).")
DB_URL_OPTION = click.option(
    "--db-url", default=None,
    help="Database URL instead of the site's SQLite file (default: $BALSAM_FUTURES_DB_URL; "
         "a password given here shows in `ps`, so prefer the variable or ~/.pgpass).")
STORE_OPTIONS = [SITE_OPTION, DB_URL_OPTION]
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


@contextlib.contextmanager
def open_tasks(site, db_url, states=(), tags=(), name=None, ids=()) -> Iterator[TaskQuery]:
    """The tasks of the store the options name that match the filter options; the store
    must exist (nothing is created) and is closed on the way out."""
    from ..query import TaskQuery

    q = TaskQuery.open(db_url=db_url, site=site, create=False)
    try:
        conditions: dict = {}
        if states:
            conditions["state__in"] = list(states)
        if tags:
            conditions["tags"] = parse_tags(tags)
        if name:
            conditions["name"] = name
        if ids:
            conditions["id__in"] = list(ids)
        yield q.filter(**conditions)
    finally:
        q.store.close()


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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Duration(click.ParamType):
    """A duration: seconds, or a number with a unit: 90s, 30m, 12h, 7d, 2w."""

    name = "duration"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            seconds = -1.0
        if not (seconds >= 0 and seconds != float("inf")):
            self.fail(f"{value!r} is not a duration: give seconds or a number with a unit "
                      "(s, m, h, d, w), e.g. 7d", param, ctx)
        return seconds
