"""Task commands: ls, show, retry, kill, rm, modify."""

from __future__ import annotations

import click

from ._common import (
    FILTER_OPTIONS,
    STORE_OPTIONS,
    BalsamFuturesError,
    fail,
    print_table,
    task_query,
    when,
    with_options,
)
from .main import main


@main.command("ls")
@with_options(STORE_OPTIONS + FILTER_OPTIONS)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N tasks.")
@click.option("--by-states", is_flag=True, help="Counts by state instead of tasks.")
@click.option("--history", is_flag=True, help="Every state change of each task.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def ls_cmd(site, db_url, states, tags, name, ids, limit, by_states, history, as_json) -> None:
    """List tasks (like `balsam ls --state FAILED --history`)."""
    import json

    try:
        q = task_query(site, db_url, states, tags, name, ids)
        if by_states:
            counts = q.by_state()
            if as_json:
                click.echo(json.dumps(counts, sort_keys=True))
            else:
                print_table(["state", "count"], sorted(counts.items()))
            return
        rows = list(q.limit(limit) if limit else q)
        hist = {r["id"]: q.store.history(r["id"]) for r in rows} if history else {}
    except (BalsamFuturesError, ValueError, TypeError) as exc:
        fail(exc)
    if as_json:
        out = [{k: v for k, v in r.items() if k not in ("result", "error")} | (
            {"history": hist[r["id"]]} if history else {}) for r in rows]
        click.echo(json.dumps(out, default=str))
        return
    if not history:
        print_table(["id", "name", "state", "tags", "nodes", "retries", "updated"],
                     [[r["id"], r["name"], r["state"],
                       ",".join(f"{k}={v}" for k, v in r["tags"].items()), r["num_nodes"],
                       f"{r['num_restarts']}/{r['max_retries']}", when(r["updated_at"])]
                      for r in rows])
        return
    for r in rows:
        click.echo(f"{r['id']} {r['name']} ({r['state']})")
        for h in hist[r["id"]]:
            click.echo(f"  {when(h['at'])}  {h['from_state'] or '':>16} -> "
                       f"{h['to_state']:<16} {h['message']}")


@main.command("show")
@with_options(STORE_OPTIONS)
@click.argument("task_id", type=int)
def show_cmd(site, db_url, task_id) -> None:
    """Every field of one task, its history and its error."""
    from ..serialization import load_exception

    try:
        row = task_query(site, db_url, ids=(task_id,)).first()
        if row is None:
            raise BalsamFuturesError(f"no task {task_id}")
        hist = task_query(site, db_url).store.history(task_id)
    except (BalsamFuturesError, ValueError) as exc:
        fail(exc)
    for key, value in row.items():
        if key in ("result", "error"):
            continue
        click.echo(f"{key:>20}: {value}")
    click.echo("history:")
    for h in hist:
        click.echo(f"  {when(h['at'])}  {h['to_state']:<16} {h['message']}")
    if row["error"]:
        exc = load_exception(row["error"], task_id)
        text = getattr(exc, "remote_traceback", None) or str(exc.__cause__ or exc)
        click.echo("error:\n" + text.strip())


def _apply(action: str, site, db_url, states, tags, name, ids, **kw) -> None:
    try:
        if not (states or tags or name or ids):
            raise click.UsageError(f"{action} needs a filter (--id, --state, --tag or --name)")
        q = task_query(site, db_url, states, tags, name, ids)
        count = {"retry": lambda: q.update(state="RESTART_READY"),
                 "kill": q.kill,
                 "rm": lambda: q.delete(running=kw.get("running", False))}[action]()
    except (BalsamFuturesError, ValueError, TypeError) as exc:
        fail(exc)
    click.echo(f"{action}: {count} task(s)")


@main.command("retry")
@with_options(STORE_OPTIONS + FILTER_OPTIONS)
def retry_cmd(**kw) -> None:
    """Run matching FAILED/KILLED tasks again (RESTART_READY)."""
    _apply("retry", **kw)


@main.command("kill")
@with_options(STORE_OPTIONS + FILTER_OPTIONS)
def kill_cmd(**kw) -> None:
    """Kill matching tasks: pending ones are cancelled, running ones stopped."""
    _apply("kill", **kw)


@main.command("rm")
@with_options(STORE_OPTIONS + FILTER_OPTIONS)
@click.option("--running", is_flag=True, help="Also delete RUNNING tasks.")
def rm_cmd(running, **kw) -> None:
    """Delete matching tasks and their history."""
    _apply("rm", running=running, **kw)


@main.command("modify")
@with_options(STORE_OPTIONS)
@click.argument("task_id", type=int)
@click.argument("changes", nargs=-1, required=True, metavar="FIELD=VALUE...")
def modify_cmd(site, db_url, task_id, changes) -> None:
    """Change fields of one task, e.g. `modify 12 priority=5 state=RESTART_READY`."""
    from ..query import coerce_update

    try:
        values = coerce_update(dict(c.partition("=")[::2] for c in changes))
        q = task_query(site, db_url, ids=(task_id,))
        if q.first() is None:
            raise BalsamFuturesError(f"no task {task_id}")
        count = q.update(**values)
    except (BalsamFuturesError, ValueError, TypeError) as exc:
        fail(exc)
    click.echo(f"modified {count} task(s)")
