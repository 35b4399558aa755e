"""Select, count, update and delete tasks by their fields; lazy and chainable, like Balsam's
``Job.objects.filter(...)``.

    q = ex.tasks().filter(state="FAILED", num_nodes__le=128, tags={"exp": "sweep1"})
    q.count()                                  # one query
    q.update(state="RESTART_READY")            # bulk, one history row per task
    ex.tasks().filter(data__lr__gt=0.01).order_by("-priority")[:10]

Keyword filters are ``field`` or ``field__op`` with op one of eq, ne, lt, le, gt, ge, in,
contains, startswith; ``tags={k: v}`` (or ``tags__k=v``) matches tags, ``data__key__op`` the
task's JSON data.  Nothing runs until the query is iterated, counted or applied.  This is
the one implementation the command line uses too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import validation
from .backends import SqlStore, open_store
from .backends.statements import QUERY_COLUMNS, QUERY_OPS
from .tasks import FINAL, HELD, TRANSITIONS, Resources, TaskOptions, TaskState, parse_state

if TYPE_CHECKING:
    from .explain import Explanation
    from .triage import FailureGroup

#: Fields ``update`` may set besides ``state``.
#: How long ``delete(running=True)`` waits for launchers to stop the runs of the tasks it
#: deletes (a live launcher looks for kill requests at least every 0.5 s; a dead one never
#: answers, and its tasks are deleted anyway after this).
KILL_WAIT_S = 10.0
UPDATABLE = frozenset({"priority", "max_retries", "wall_time_s", "num_nodes", "ranks_per_node",
                       "threads_per_rank", "gpus_per_rank", "node_packing_count",
                       "description", "name"})
#: The fields that make a task's ``Resources``; the rest of UPDATABLE are ``TaskOptions``.
RESOURCE_FIELDS = ("num_nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank",
                   "node_packing_count")
INT_FIELDS = frozenset({"priority", "max_retries", *RESOURCE_FIELDS})
#: States only a launcher moves a task into, as it claims, starts and ends runs.  A task put
#: there by hand is held by no launcher that knows it, so none would ever run, finish or
#: requeue it.
LAUNCHER_OWNED: frozenset[TaskState] = HELD | {
    TaskState.RUN_DONE, TaskState.POSTPROCESSED, TaskState.RUN_ERROR, TaskState.RUN_TIMEOUT,
    TaskState.STAGED_IN, TaskState.STAGED_OUT}


def _parse(key: str, value: Any) -> list[tuple[str, str, Any]]:
    if key == "tags":
        if not isinstance(value, dict):
            raise TypeError("tags= takes a dict, e.g. tags={'exp': 'sweep1'}")
        return [(f"tags.{k}", "eq", str(v)) for k, v in value.items()]
    parts = key.split("__")
    op = "eq"
    if len(parts) > 1 and parts[-1] in QUERY_OPS:
        op = parts.pop()
    if parts[0] in ("tags", "data"):
        if len(parts) != 2:
            raise ValueError(f"filter {key!r}: write {parts[0]}__KEY or {parts[0]}__KEY__OP")
        return [(f"{parts[0]}.{parts[1]}", op, value)]
    if len(parts) != 1 or parts[0] not in QUERY_COLUMNS:
        valid = ", ".join(sorted(QUERY_COLUMNS))
        raise ValueError(f"unknown task field in filter {key!r}; fields: {valid}, "
                         "tags, data__KEY")
    field = parts[0]
    if op == "in" and isinstance(value, (str, bytes)):
        raise TypeError(f"filter {key!r} takes a list of values")
    if field == "state":
        value = [parse_state(v).value for v in value] if op == "in" else \
            parse_state(value).value
    return [(field, op, value)]


class TaskQuery:
    """A lazy selection of tasks in one store."""

    def __init__(self, store: SqlStore, filters: tuple = (), order: tuple[str, ...] = (),
                 limit: int | None = None) -> None:
        self.store = store
        self._filters = filters
        self._order = order
        self._limit = limit

    @classmethod
    def open(cls, db_url: str | None = None, site: str | None = None, *,
             create: bool = True) -> TaskQuery:
        """All tasks in a store: ``db_url``, else ``$BALSAM_FUTURES_DB_URL``, else the site's
        embedded database (``site``, ``$BALSAM_FUTURES_SITE`` or ./.balsam_futures), which
        ``create=False`` refuses to create (``SiteError``).  The caller closes
        ``query.store`` when done."""
        from .sitedir import resolve_store_url

        url, _site = resolve_store_url(db_url, site, create=create)
        return cls(open_store(url))

    def _with(self, **changes: Any) -> TaskQuery:
        fields = {"filters": self._filters, "order": self._order, "limit": self._limit,
                  **changes}
        return TaskQuery(self.store, **fields)

    def filter(self, **conditions: Any) -> TaskQuery:
        """Tasks that also match every condition (see the module docstring)."""
        added: list[tuple[str, str, Any]] = []
        for key, value in conditions.items():
            added.extend(_parse(key, value))
        return self._with(filters=self._filters + tuple(added))

    def order_by(self, *fields: str) -> TaskQuery:
        """Order by task fields; ``-field`` for descending."""
        for f in fields:
            if f.lstrip("-") not in QUERY_COLUMNS:
                raise ValueError(f"cannot order by {f!r}")
        return self._with(order=tuple(fields))

    def limit(self, n: int) -> TaskQuery:
        return self._with(limit=int(n))

    def __getitem__(self, item: slice) -> list[dict[str, Any]]:
        if not isinstance(item, slice) or item.start not in (None, 0) or item.step:
            raise TypeError("queries take slices like [:10]")
        return list(self.limit(item.stop))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.store.query(self._filters, self._order, self._limit))

    def ids(self) -> list[int]:
        return [row["id"] for row in self]

    def rows(self, *, history: bool = False) -> list[dict[str, Any]]:
        """The matching rows; with ``history``, each also holds its state changes, oldest
        first, under ``"history"`` (read for all the rows at once, not one query per row)."""
        rows = list(self)
        if history:
            changes = self.store.histories([row["id"] for row in rows])
            for row in rows:
                row["history"] = changes.get(row["id"], [])
        return rows

    def get(self, task_id: int, *, history: bool = False) -> dict[str, Any]:
        """The row of task ``task_id`` if it matches (see :meth:`rows` for ``history``);
        raises ``ValueError`` when there is no such task."""
        rows = self.filter(id=task_id).limit(1).rows(history=history)
        if not rows:
            raise ValueError(f"no task {task_id}")
        return rows[0]

    def first(self) -> dict[str, Any] | None:
        rows = self.store.query(self._filters, self._order, 1)
        return rows[0] if rows else None

    def by_state(self) -> dict[str, int]:
        """Counts of the matching tasks by state (one GROUP BY)."""
        return self.store.query_count_by_state(self._filters)

    def count(self) -> int:
        return sum(self.by_state().values())

    def update(self, *, state: str | TaskState | None = None, **values: Any) -> int:
        """Change the matching tasks; returns how many changed.

        ``state=`` moves only the tasks allowed to go there (e.g. FAILED to RESTART_READY
        to run again), each with a history row; other fields: see ``UPDATABLE``.
        """
        unknown = set(values) - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}; updatable: "
                             f"state, {', '.join(sorted(UPDATABLE))}")
        if self._limit is not None or self._order:
            raise ValueError("update() applies to every matching task: drop limit/order_by")
        check_values(values)
        target = parse_state(state) if state is not None else None
        if target in LAUNCHER_OWNED:
            movable = ", ".join(s.value for s in TaskState if s not in LAUNCHER_OWNED)
            raise ValueError(f"cannot move tasks to {target} by hand: only a launcher moves "
                             f"tasks there; states to move tasks to: {movable}")
        changes = dict(values)
        if target is not None:
            changes["state"] = target
        if not changes:
            return 0
        return len(self.store.query_update(self._filters, changes, "updated by a query"))

    def modify(self, task_id: int, **values: Any) -> None:
        """Change fields of task ``task_id``, checked as ``submit()`` checks them.

        The task's current values with ``values`` applied must make a valid ``Resources``
        and ``TaskOptions``; ``state=`` must be a move TRANSITIONS allows from the task's
        current state, and not into one only launchers set (``LAUNCHER_OWNED``).  Raises
        ``ValueError`` or ``TypeError`` saying what to change, and then changes nothing.
        """
        state = values.pop("state", None)
        if state is None and not values:
            raise ValueError("nothing to modify: give FIELD=VALUE changes")
        one = self.filter(id=task_id)
        row = one.first()
        if row is None:
            raise ValueError(f"no task {task_id}")
        check_values(values, current=row)
        if state is not None:
            state = parse_state(state)
            check_move(task_id, TaskState(row["state"]), state)
        if one.update(state=state, **values):
            return
        # The store moves only tasks still allowed to move: another process got there first.
        now = one.first()
        where = "it was deleted" if now is None else f"it is {now['state']} now"
        raise ValueError(f"task {task_id} changed meanwhile ({where}); nothing modified")

    def retry(self) -> int:
        """Run the matching tasks again: move the FAILED and KILLED ones to RESTART_READY;
        returns how many moved.  The others stay where they are (a task a launcher holds is
        never moved by hand: two copies would run)."""
        retriable = self.filter(
            state__in=[s.value for s in FINAL if TaskState.RESTART_READY in TRANSITIONS[s]])
        # A task with inputs to fetch whose transfer failed fetches them again first (what
        # is present already is kept); staging=None leaves out the tasks without any.
        failed_in = [r["id"] for r in retriable.filter(state="FAILED", staging__ne=None)
                     if (r.get("staging") or {}).get("in")]
        moved = 0
        if failed_in:
            moved = retriable.filter(id__in=failed_in).update(
                state=TaskState.AWAITING_STAGE_IN)
            retriable = retriable.filter(id__not_in=failed_in)
        return moved + retriable.update(state=TaskState.RESTART_READY)

    def tagged_any(self, tags: Mapping[str, Any]) -> TaskQuery:
        """Tasks that also carry, for each key of ``tags``, its value or one of its values
        (a list): ``--tag exp=a --tag exp=b`` matches either experiment."""
        query = self
        for key, value in tags.items():
            values = [str(v) for v in value] if isinstance(value, (list, tuple, set)) \
                else [str(value)]
            op = "eq" if len(values) == 1 else "in"
            query = query._with(filters=query._filters + (
                (f"tags.{key}", op, values[0] if op == "eq" else values),))
        return query

    def failures(self) -> list[FailureGroup]:
        """The matching FAILED tasks grouped by the cause of their failure (see
        ``balsam_futures.triage``), largest group first.  Only failed rows are read, a page
        at a time, so memory grows with the number of failures, not of tasks."""
        from .triage import PAGE, group_failures

        return group_failures(self._failed_rows(PAGE))

    def _failed_rows(self, page: int) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            rows = self.store.failed_page(self._filters, after, page)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def failure_group(self, group: str) -> TaskQuery:
        """The matching tasks of failure group ``group`` (a name ``failures()`` gave);
        raises ``ValueError`` naming the groups there are when there is no such group."""
        groups = self.failures()
        for g in groups:
            if g.group == group:
                return self.filter(id__in=g.task_ids)
        known = ", ".join(g.group for g in groups) or "none"
        raise ValueError(f"no failure group {group!r}; groups: {known}")

    def cancel(self) -> int:
        """Cancel the matching tasks no launcher holds yet; returns how many."""
        return len(self.store.cancel(self.ids()))

    def kill(self) -> int:
        """Kill the matching tasks: pending ones are cancelled, running ones stopped by their
        launchers (KILLED); returns how many were affected."""
        return len(self.store.kill(self.ids()))

    def explain(self, task_id: int) -> Explanation:
        """Why task ``task_id`` is not running, in words (see balsam_futures.explain)."""
        from .explain import explain

        return explain(self.store, task_id)

    def delete(self, *, running: bool = False, kill_wait: float = KILL_WAIT_S) -> int:
        """Delete the matching tasks and their history.  Tasks a launcher holds (CLAIMED or
        RUNNING) only with ``running=True``: they are killed first (waiting up to
        ``kill_wait`` seconds for their launchers to stop the runs), so no run goes on
        without its row; futures waiting on deleted tasks raise."""
        if self._limit is not None or self._order:
            raise ValueError("delete() applies to every matching task: drop limit/order_by")
        if running:
            held = self.filter(state__in=sorted(s.value for s in HELD)).ids()
            if held and self.store.kill(held):
                deadline = time.monotonic() + kill_wait
                while time.monotonic() < deadline and any(
                        e.state in HELD for e in self.store.task_outcomes(held)):
                    time.sleep(0.05)  # polling a few rows; launchers stop runs in ms
        return len(self.store.query_delete(self._filters, running=running))


def coerce_update(fields: dict[str, str]) -> dict[str, Any]:
    """Turn FIELD=VALUE strings (from the command line) into typed update() arguments."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "state":
            out[key] = parse_state(value)
        elif key in INT_FIELDS:
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"{key} must be an integer, not {value!r}") from None
        elif key == "wall_time_s":
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"wall_time_s must be a number of seconds, not {value!r}"
                                 ) from None
        elif key in UPDATABLE:
            out[key] = value
        else:
            raise ValueError(f"cannot modify {key!r}; fields: state, "
                             f"{', '.join(sorted(UPDATABLE))}")
    return out


def check_values(values: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> None:
    """Refuse field values that ``submit()`` would refuse, by the same rules and messages
    (32-bit ints, name length...): ``values`` applied to ``current`` (a task's row; default:
    the defaults) must make a valid ``Resources`` and ``TaskOptions``."""
    if "wall_time_s" in values:
        # The rule of TaskOptions(timeout=...), whose message names the option, not the field.
        try:
            validation.check_timeout(values["wall_time_s"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"wall_time_s: {exc}") from None
    merged = {**(current or {}), **values}
    resources = Resources(**{f: merged[f] for f in RESOURCE_FIELDS if f in merged})
    options = {f: merged[f] for f in ("name", "description", "max_retries", "priority")
               if f in merged}
    TaskOptions(resources=resources, timeout=merged.get("wall_time_s"), **options)


def check_move(task_id: int, old: TaskState, new: TaskState) -> None:
    """Refuse a move of task ``task_id`` from ``old`` to ``new`` that TRANSITIONS does not
    allow, or into a state only launchers set; the message lists the moves there are."""
    if old in HELD:
        # Moved by hand, its launcher would go on running it while another claims it.
        raise ValueError(f"task {task_id} is {old}, held by a launcher: kill it first "
                         "(balsam-futures kill), or let its launcher end the run")
    if new in TRANSITIONS[old] and new not in LAUNCHER_OWNED:
        return
    allowed = [s.value for s in TaskState if s in TRANSITIONS[old] and s not in LAUNCHER_OWNED]
    why = " (only a launcher moves tasks there)" if new in LAUNCHER_OWNED else ""
    raise ValueError(f"task {task_id} is {old} and cannot be moved to {new}{why}; it can be "
                     f"moved to: {', '.join(allowed) or 'no other state'}")
