"""`balsam-futures explain ID`: why a task is not running, in words."""

from __future__ import annotations

import json

import click

from ._common import STORE_OPTIONS, open_tasks, with_options
from .main import main


@main.command("explain")
@with_options(STORE_OPTIONS)
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def explain_cmd(site, db_url, task_id, as_json) -> None:
    """Why task TASK_ID is not running: its parents, the live launchers that could take it,
    and its place in the claim order (like `hq task explain`)."""
    with open_tasks(site, db_url) as q:
        try:
            found = q.explain(task_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"id": found.task_id, "state": found.state,
                               "reasons": found.reasons}))
        return
    click.echo(str(found))
