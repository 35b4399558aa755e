"""Task commands: ls, show, retry, kill, rm, modify."""

from __future__ import annotations

import click

from ._common import (
    FILTER_OPTIONS,
    STORE_OPTIONS,
    open_tasks,
    print_table,
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
@click.option("--watch", is_flag=True, help="Follow the matching tasks live (counts by state, "
                                             "progress) until none is left to run; Ctrl-C stops.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes with --watch.")
def ls_cmd(site, db_url, states, tags, name, ids, limit, by_states, history, as_json, watch,
           interval) -> None:
    """List tasks (like `balsam ls --state FAILED --history`)."""
    import json

    with open_tasks(site, db_url, states, (), name, ids) as q:
        q = q.tagged_any(tags_any(tags))
        if watch:
            _watch(q, interval)
            return
        if by_states:
            counts = q.by_state()
            if as_json:
                click.echo(json.dumps(counts, sort_keys=True))
            else:
                print_table(["state", "count"], sorted(counts.items()))
            return
        rows = (q.limit(limit) if limit else q).rows(history=history)
    if as_json:
        out = [{k: v for k, v in r.items() if k not in ("result", "error")} for r in rows]
        click.echo(json.dumps(out, default=str))
        return
    if not history:
        # A cache column only where a task was submitted with cache= (hit: the task whose
        # result it took; else the start of its key).
        cached = any(r.get("cache_key") for r in rows)
        print_table(["id", "name", "state", "tags", "nodes", "retries", "updated"]
                    + (["cache"] if cached else []),
                    [[r["id"], r["name"], r["state"],
                      ",".join(f"{k}={v}" for k, v in r["tags"].items()), r["num_nodes"],
                      f"{r['num_restarts']}/{r['max_retries']}", when(r["updated_at"])]
                     + ([_cache_cell(r)] if cached else [])
                     for r in rows])
        return
    for r in rows:
        click.echo(f"{r['id']} {r['name']} ({r['state']})")
        # As Balsam's screen: the error's last lines under the last RUN_ERROR row.
        last_error = max((k for k, h in enumerate(r["history"])
                          if h["to_state"] == "RUN_ERROR"), default=None)
        for k, h in enumerate(r["history"]):
            click.echo(f"  {when(h['at'])}  {h['from_state'] or '':>16} -> "
                       f"{h['to_state']:<16} {h['message']}")
            if k == last_error and r.get("error"):
                for line in _error_tail(r["error"]):
                    click.echo(f"      | {line}")


def _cache_cell(row: dict) -> str:
    if not row.get("cache_key"):
        return ""
    if row.get("cached_from") is not None:
        verb = "hit of" if row["state"] == "JOB_FINISHED" else "follows"
        return f"{verb} {row['cached_from']}"
    return f"key {row['cache_key'][:12]}"


#: Lines of a failed task's traceback `ls --history` prints under its RUN_ERROR row.
ERROR_LINES = 6


def _error_tail(blob: bytes) -> list[str]:
    """The last lines of a packed error's traceback (its message if there is none)."""
    from ..triage import unpack_error

    packed = unpack_error(blob)
    if packed is None:
        return []
    text = str(packed.get("traceback") or packed.get("message") or "")
    lines = [line for line in text.strip().strip('"').strip().splitlines() if line.strip()]
    return lines[-ERROR_LINES:]


def tags_any(values: tuple[str, ...]) -> dict[str, list[str]]:
    """``--tag KEY=VALUE`` options, each key with every value given for it (either
    matches)."""
    tags: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags.setdefault(key, []).append(value)
    return tags


def _progress_table(counts: dict[str, int], elapsed: float):
    """The live view: a progress bar over the matching tasks and their counts by state."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    from ..tasks import FINAL, TaskState

    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if TaskState(s) in FINAL)
    failed = counts.get("FAILED", 0) + counts.get("KILLED", 0)
    table = Table("state", "count", box=None, pad_edge=False, header_style="bold")
    for state in TaskState:
        if counts.get(state.value):
            table.add_row(state.value, str(counts[state.value]))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=done, width=40),
                f"{done}/{total} done, {failed} failed, {elapsed:.0f} s")
    return Group(bar, table)


def _watch(q, interval: float) -> None:
    """Refresh counts by state until every matching task is final (or Ctrl-C)."""
    import time

    from rich.console import Console
    from rich.live import Live

    from ..tasks import FINAL, TaskState

    start = time.monotonic()
    counts = q.by_state()
    console = Console()
    try:
        with Live(_progress_table(counts, 0), console=console, auto_refresh=False) as live:
            # Started before the campaign submitted anything: wait for its tasks rather
            # than report "0/0 done".
            while not counts or any(TaskState(s) not in FINAL for s in counts):
                time.sleep(interval)
                counts = q.by_state()
                live.update(_progress_table(counts, time.monotonic() - start), refresh=True)
    except KeyboardInterrupt:
        pass


@main.command("show")
@with_options(STORE_OPTIONS)
@click.argument("task_id", type=int)
@click.option("--follow", is_flag=True, help="Print the task's job.out as it grows, until the "
                                             "task ends.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
              help="Seconds between looks with --follow.")
def show_cmd(site, db_url, task_id, follow, interval) -> None:
    """Every field of one task, its history and its error."""
    from ..serialization import load_exception

    with open_tasks(site, db_url) as q:
        row = q.get(task_id, history=True)
        call = q.store.task_payload(task_id)
        if follow:
            _follow(q, row, interval, site)
            return
    for key, value in row.items():
        if key in ("result", "error", "history"):
            continue
        if key.endswith("_at") and isinstance(value, (int, float)):
            value = when(value)
        click.echo(f"{key:>20}: {value}")
    if call is not None and call[0] == "python":
        fn, args = describe_call(call[1])
        click.echo(f"{'callable':>20}: {fn}")
        click.echo(f"{'arguments':>20}: {args}")
    click.echo("history:")
    for h in row["history"]:
        click.echo(f"  {when(h['at'])}  {h['to_state']:<16} {h['message']}")
    if row["kind"] == "shell":
        _show_shell_run(row)
    if row["error"]:
        exc = load_exception(row["error"], task_id)
        text = getattr(exc, "remote_traceback", None) or str(exc.__cause__ or exc)
        click.echo("error:\n" + text.strip())


def describe_call(payload: bytes) -> tuple[str, str]:
    """The callable's name and a short summary of the arguments of a Python task's payload
    (each part says why when it cannot be read here, e.g. its module is not importable)."""
    import pickle
    import reprlib
    import struct

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist = 40, 40, 4
    try:
        (size,) = struct.unpack_from("!I", payload)
        fn_bytes, args_blob = payload[4:4 + size], payload[4 + size:]
    except struct.error:
        return "(unreadable payload)", ""
    try:
        fn = pickle.loads(fn_bytes)
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    except Exception as exc:  # noqa: BLE001 - the user's module may not import here
        name = f"(cannot load here: {type(exc).__name__}: {exc})"
    try:
        args, kwargs = pickle.loads(args_blob)
        parts = [short.repr(a) for a in args] + [f"{k}={short.repr(v)}"
                                                  for k, v in kwargs.items()]
        summary = "(" + ", ".join(parts) + ")"
    except Exception as exc:  # noqa: BLE001
        summary = f"(cannot load here: {type(exc).__name__}: {exc})"
    return name, summary[:200]


def _follow(q, row: dict, interval: float, site) -> None:
    """Print task ``row``'s job.out from its start and as it grows, until the task is final
    (then what was written last)."""
    import time

    from ..tasks import FINAL, TaskState
    from ..web.data import job_out_path

    task_id = row["id"]
    offset = 0
    seen = False
    while True:
        path = job_out_path(row, site)
        if path is not None and path.exists():
            seen = True
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            if chunk:
                click.echo(chunk.decode(errors="replace"), nl=False)
        if TaskState(row["state"]) in FINAL:
            if not seen and row["kind"] == "python":
                click.echo(f"task {task_id} wrote no job.out: the launcher of the executor "
                           "that submitted it printed its output on that executor's terminal")
            click.echo(f"task {task_id} is {row['state']}")
            return
        time.sleep(interval)
        row = q.get(task_id)


def _show_shell_run(row: dict) -> None:
    """A shell task's working directory and the end of its job.out, from its outcome."""
    from ..apps import ShellResult
    from ..serialization import load_exception, load_result

    workdir = tail = command = None
    if row["result"]:
        try:
            result = load_result(row["result"])
        except Exception:  # noqa: BLE001 - a postprocess hook may return anything
            result = None
        if isinstance(result, ShellResult):
            workdir, tail = result.workdir, result.tail(10)
            command = getattr(result, "command", "")  # results stored before it existed
    elif row["error"]:
        exc = load_exception(row["error"], row["id"])
        workdir, tail = getattr(exc, "workdir", None), getattr(exc, "output_tail", None)
    if workdir:
        click.echo(f"{'working directory':>20}: {workdir}")
    if command:
        click.echo(f"{'command':>20}: {command}")
    if tail:
        click.echo("job.out (last lines):\n" + tail.rstrip())


GROUP_OPTION = click.option("-g", "--group", default=None, metavar="GROUP",
                            help="A failure group (see `balsam-futures failures`).")


def _apply(action: str, site, db_url, states, tags, name, ids, group=None, **kw) -> None:
    if not (states or tags or name or ids or group):
        raise click.UsageError(f"{action} needs a filter (--id, --state, --tag, --name or "
                               "--group)")
    with open_tasks(site, db_url, states, (), name, ids) as q:
        q = q.tagged_any(tags_any(tags))
        if group:
            q = q.failure_group(group)
        count = {"retry": q.retry, "kill": q.kill,
                 "rm": lambda: q.delete(running=kw.get("running", False))}[action]()
    click.echo(f"{action}: {count} task(s)")


@main.command("retry")
@with_options(STORE_OPTIONS + FILTER_OPTIONS + [GROUP_OPTION])
def retry_cmd(**kw) -> None:
    """Run matching FAILED/KILLED tasks again (RESTART_READY)."""
    _apply("retry", **kw)


@main.command("kill")
@with_options(STORE_OPTIONS + FILTER_OPTIONS)
def kill_cmd(**kw) -> None:
    """Kill matching tasks: pending ones are cancelled, running ones stopped."""
    _apply("kill", **kw)


@main.command("rm")
@with_options(STORE_OPTIONS + FILTER_OPTIONS + [GROUP_OPTION])
@click.option("--running", is_flag=True, help="Also delete tasks a launcher holds (CLAIMED or "
                                              "RUNNING): they are killed first.")
def rm_cmd(running, **kw) -> None:
    """Delete matching tasks and their history."""
    _apply("rm", running=running, **kw)


@main.command("modify")
@with_options(STORE_OPTIONS)
@click.argument("task_id", type=int)
@click.argument("changes", nargs=-1, required=True, metavar="FIELD=VALUE...")
def modify_cmd(site, db_url, task_id, changes) -> None:
    """Change fields of one task, e.g. `modify 12 priority=5 state=RESTART_READY`; the new
    values are checked as submit() checks them, and a state move as TRANSITIONS allows it."""
    from ..query import coerce_update

    fields = {}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or not key:
            raise ValueError(f"{change!r} is not FIELD=VALUE, e.g. priority=5")
        fields[key] = value
    with open_tasks(site, db_url) as q:
        q.modify(task_id, **coerce_update(fields))
    click.echo(f"modified task {task_id}")
