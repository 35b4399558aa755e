"""The ``balsam-futures`` command: thin over the library, one clear line per user mistake."""

from __future__ import annotations

import os
import sys

import click

from . import __name__ as _pkg
from . import config
from .errors import BalsamFuturesError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    return tags


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=_pkg)
def main() -> None:
    """Run Python callables and shell applications from a task store."""


@main.command()
@click.option("--site", type=click.Path(file_okay=False), default=None,
              help="Site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures).")
@click.option("--db-url", default=lambda: config.setting("DB_URL"),
              help="Database URL instead of the site's SQLite file (default: "
                   "$BALSAM_FUTURES_DB_URL; a password given here shows in `ps`, so prefer "
                   "the variable or ~/.pgpass).")
@click.option("-n", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPUs of this machine).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Serve only tasks with this tag (repeatable).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds with nothing to run.")
@click.option("--lease", type=click.FloatRange(min=1), default=None,
              help="Seconds without a heartbeat after which this launcher's tasks are requeued.")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs to share among the workers, none shared (default: detected).")
def launcher(site, db_url, workers, tags, idle_timeout, lease, gpus) -> None:
    """Start a launcher here: claim tasks from the store and run them until stopped."""
    from .launcher.pilot import LauncherConfig, run_launcher
    from .sitedir import open_site

    try:
        the_site = open_site(site)
        cfg = LauncherConfig(num_workers=workers or os.cpu_count() or 1,
                             tags=_parse_tags(tags), idle_timeout=idle_timeout,
                             lease_seconds=lease, site=str(the_site.path),
                             gpu_ids=None if gpus is None else tuple(map(str, range(gpus))))
        count = run_launcher(db_url or the_site.db_url, cfg)
    except BalsamFuturesError as exc:
        _fail(exc)
    click.echo(f"launcher finished {count} task(s)")


@main.group()
def db() -> None:
    """The site's own PostgreSQL server (for many launchers on one store)."""


def _pg(site: str | None, run_as: str | None):
    from .backends.pgserver import LocalPostgres
    from .sitedir import open_site

    return LocalPostgres(open_site(site).path / "postgres", run_as=run_as)


_site_option = click.option("--site", type=click.Path(file_okay=False), default=None,
                            help="Site directory (default: $BALSAM_FUTURES_SITE or "
                                 "./.balsam_futures).")
_run_as_option = click.option("--run-as", default=None, metavar="USER",
                              help="Run the server as this unprivileged user (needed as root).")


@db.command("start")
@_site_option
@_run_as_option
def db_start(site, run_as) -> None:
    """Create (first time) and start the site's server; print its URL."""
    try:
        click.echo(_pg(site, run_as).start())
    except BalsamFuturesError as exc:
        _fail(exc)


@db.command("stop")
@_site_option
@_run_as_option
def db_stop(site, run_as) -> None:
    """Stop the site's server."""
    try:
        _pg(site, run_as).stop()
    except BalsamFuturesError as exc:
        _fail(exc)


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
        _fail(exc)


# -- tasks: ls, show, retry, kill, rm, modify ----------------------------------------------

_store_options = [
    click.option("--site", type=click.Path(file_okay=False), default=None,
                 help="Site directory (default: $BALSAM_FUTURES_SITE or ./.balsam_futures)."),
    click.option("--db-url", default=None, help="Database URL (default: "
                                                "$BALSAM_FUTURES_DB_URL, else the site's)."),
]
_filter_options = [
    click.option("-s", "--state", "states", multiple=True, help="Task state (repeatable)."),
    click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE",
                 help="Tag to match (repeatable)."),
    click.option("-n", "--name", default=None, help="Task name."),
    click.option("-i", "--id", "ids", multiple=True, type=int, help="Task id (repeatable)."),
]


def _with(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def _query(site, db_url, states=(), tags=(), name=None, ids=()):
    from .query import TaskQuery

    q = TaskQuery.open(db_url=db_url, site=site)
    conditions: dict = {}
    if states:
        conditions["state__in"] = list(states)
    if tags:
        conditions["tags"] = _parse_tags(tags)
    if name:
        conditions["name"] = name
    if ids:
        conditions["id__in"] = list(ids)
    return q.filter(**conditions)


def _print_table(columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console(soft_wrap=True).print(table)


def _when(t: float | None) -> str:
    import datetime

    return "" if t is None else datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


@main.command("ls")
@_with(_store_options + _filter_options)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N tasks.")
@click.option("--by-states", is_flag=True, help="Counts by state instead of tasks.")
@click.option("--history", is_flag=True, help="Every state change of each task.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def ls_cmd(site, db_url, states, tags, name, ids, limit, by_states, history, as_json) -> None:
    """List tasks (like `balsam ls --state FAILED --history`)."""
    import json

    try:
        q = _query(site, db_url, states, tags, name, ids)
        if by_states:
            counts = q.by_state()
            if as_json:
                click.echo(json.dumps(counts, sort_keys=True))
            else:
                _print_table(["state", "count"], sorted(counts.items()))
            return
        rows = list(q.limit(limit) if limit else q)
        hist = {r["id"]: q.store.history(r["id"]) for r in rows} if history else {}
    except (BalsamFuturesError, ValueError, TypeError) as exc:
        _fail(exc)
    if as_json:
        out = [{k: v for k, v in r.items() if k not in ("result", "error")} | (
            {"history": hist[r["id"]]} if history else {}) for r in rows]
        click.echo(json.dumps(out, default=str))
        return
    if not history:
        _print_table(["id", "name", "state", "tags", "nodes", "retries", "updated"],
                     [[r["id"], r["name"], r["state"],
                       ",".join(f"{k}={v}" for k, v in r["tags"].items()), r["num_nodes"],
                       f"{r['num_restarts']}/{r['max_retries']}", _when(r["updated_at"])]
                      for r in rows])
        return
    for r in rows:
        click.echo(f"{r['id']} {r['name']} ({r['state']})")
        for h in hist[r["id"]]:
            click.echo(f"  {_when(h['at'])}  {h['from_state'] or '':>16} -> "
                       f"{h['to_state']:<16} {h['message']}")


@main.command("show")
@_with(_store_options)
@click.argument("task_id", type=int)
def show_cmd(site, db_url, task_id) -> None:
    """Every field of one task, its history and its error."""
    from .serialization import load_exception

    try:
        row = _query(site, db_url, ids=(task_id,)).first()
        if row is None:
            raise BalsamFuturesError(f"no task {task_id}")
        hist = _query(site, db_url).store.history(task_id)
    except (BalsamFuturesError, ValueError) as exc:
        _fail(exc)
    for key, value in row.items():
        if key in ("result", "error"):
            continue
        click.echo(f"{key:>20}: {value}")
    click.echo("history:")
    for h in hist:
        click.echo(f"  {_when(h['at'])}  {h['to_state']:<16} {h['message']}")
    if row["error"]:
        exc = load_exception(row["error"], task_id)
        text = getattr(exc, "remote_traceback", None) or str(exc.__cause__ or exc)
        click.echo("error:\n" + text.strip())


def _apply(action: str, site, db_url, states, tags, name, ids, **kw) -> None:
    try:
        if not (states or tags or name or ids):
            raise click.UsageError(f"{action} needs a filter (--id, --state, --tag or --name)")
        q = _query(site, db_url, states, tags, name, ids)
        count = {"retry": lambda: q.update(state="RESTART_READY"),
                 "kill": q.kill,
                 "rm": lambda: q.delete(running=kw.get("running", False))}[action]()
    except (BalsamFuturesError, ValueError, TypeError) as exc:
        _fail(exc)
    click.echo(f"{action}: {count} task(s)")


@main.command("retry")
@_with(_store_options + _filter_options)
def retry_cmd(**kw) -> None:
    """Run matching FAILED/KILLED tasks again (RESTART_READY)."""
    _apply("retry", **kw)


@main.command("kill")
@_with(_store_options + _filter_options)
def kill_cmd(**kw) -> None:
    """Kill matching tasks: pending ones are cancelled, running ones stopped."""
    _apply("kill", **kw)


@main.command("rm")
@_with(_store_options + _filter_options)
@click.option("--running", is_flag=True, help="Also delete RUNNING tasks.")
def rm_cmd(running, **kw) -> None:
    """Delete matching tasks and their history."""
    _apply("rm", running=running, **kw)


@main.command("modify")
@_with(_store_options)
@click.argument("task_id", type=int)
@click.argument("changes", nargs=-1, required=True, metavar="FIELD=VALUE...")
def modify_cmd(site, db_url, task_id, changes) -> None:
    """Change fields of one task, e.g. `modify 12 priority=5 state=RESTART_READY`."""
    from .query import coerce_update

    try:
        values = coerce_update(dict(c.partition("=")[::2] for c in changes))
        q = _query(site, db_url, ids=(task_id,))
        if q.first() is None:
            raise BalsamFuturesError(f"no task {task_id}")
        count = q.update(**values)
    except (BalsamFuturesError, ValueError, TypeError) as exc:
        _fail(exc)
    click.echo(f"modified {count} task(s)")


@main.command("env")
@click.argument("site", type=click.Path(file_okay=False), required=False)
def env_cmd(site) -> None:
    """Print the shell line that points balsam-futures at a site:
    eval "$(balsam-futures env DIR)"."""
    import shlex

    from .sitedir import open_site

    try:
        path = open_site(site).path
    except BalsamFuturesError as exc:
        _fail(exc)
    click.echo(f"export {config.env_name('SITE')}={shlex.quote(str(path))}")


@main.command("init")
@click.argument("site", type=click.Path(file_okay=False), required=False)
def init_cmd(site) -> None:
    """Create a site (database, data/, logs/) and say how to use it."""
    from .query import TaskQuery
    from .sitedir import open_site

    try:
        path = open_site(site).path
        TaskQuery.open(site=str(path)).store.close()  # creates the database
    except BalsamFuturesError as exc:
        _fail(exc)
    click.echo(f"site ready: {path}\nuse it with: eval \"$(balsam-futures env {path})\"")
