"""`balsam-futures failures`: failed tasks grouped by the cause of their failure."""

from __future__ import annotations

import json

import click

from ._common import FILTER_OPTIONS, STORE_OPTIONS, open_tasks, print_table, when, with_options
from .main import main


@main.command("failures")
@with_options(STORE_OPTIONS + FILTER_OPTIONS[1:])
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def failures_cmd(site, db_url, tags, name, ids, as_json) -> None:
    """FAILED tasks grouped by cause: count, first and last seen, an example and its error.
    Act on a group with `retry --group G` or `rm --group G`."""
    from .tasks import tags_any

    with open_tasks(site, db_url, (), (), name, ids) as q:
        groups = q.tagged_any(tags_any(tags)).failures()
    if as_json:
        click.echo(json.dumps([g.as_dict() for g in groups]))
        return
    print_table(["group", "count", "first seen", "last seen", "example", "error"],
                [[g.group, g.count, when(g.first_seen), when(g.last_seen), g.example_id,
                  g.example_error] for g in groups])
