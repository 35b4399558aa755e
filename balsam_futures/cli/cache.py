"""`balsam-futures cache ls | clear`: the memoization index (results reused by cache=)."""

from __future__ import annotations

import json

import click

from ._common import STORE_OPTIONS, Duration, open_tasks, print_table, when, with_options
from .main import main

_SELECT = [
    click.option("--kind", default=None, metavar="KIND",
                 help="Only entries of this kind (the task's kind= option, else its name)."),
    click.option("--older-than", type=Duration(), default=None, metavar="DURATION",
                 help="Only entries made longer ago than this (seconds, or 30m, 12h, 7d...)."),
]


@main.group("cache")
def cache_group() -> None:
    """The results that cache=True reuses instead of running a call again."""


@cache_group.command("ls")
@with_options(STORE_OPTIONS + _SELECT)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def cache_ls(site, db_url, kind, older_than, as_json) -> None:
    """List cache entries, newest first, with the hits and misses of cache= submissions."""
    with open_tasks(site, db_url) as q:
        entries = q.store.cache_entries(kind=kind, older_than=older_than)
        counts = q.store.cache_counts()
    if as_json:
        click.echo(json.dumps({"entries": entries, **counts}, sort_keys=True))
        return
    if entries:
        print_table(["key", "kind", "task", "state", "made", "hits", "last hit", "result"],
                    [[e["key"][:16], e["kind"], e["task_id"], e["state"],
                      when(e["created_at"]), e["hits"], when(e["last_hit_at"]),
                      _size(e["result_bytes"])] for e in entries])
    else:
        click.echo("no cache entries" + (" match" if kind or older_than is not None else ""))
    click.echo(f"submissions with cache=: {counts['hits']} hit(s), {counts['misses']} "
               f"miss(es), {counts['following']} following a task in flight")


@cache_group.command("clear")
@with_options(STORE_OPTIONS + _SELECT)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(site, db_url, kind, older_than, yes) -> None:
    """Forget cached results: the next identical submissions run again.  The tasks and
    their results stay in the store."""
    with open_tasks(site, db_url) as q:
        what = q.store.cache_entries(kind=kind, older_than=older_than)
        if not what:
            click.echo("no cache entries to clear")
            return
        if not yes:
            click.confirm(f"forget {len(what)} cached result(s)?", abort=True)
        n = q.store.clear_cache(kind=kind, older_than=older_than)
    click.echo(f"cleared {n} cache entr{'y' if n == 1 else 'ies'}")


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""
