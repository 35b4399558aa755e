"""What the campaign page shows, read from a store with bounded queries only.

Every read is a GROUP BY, an indexed range (runs by ``ended_at``, failed rows by id) or a
fixed-size page, so the page costs the same on a campaign of a thousand tasks or a million.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..apps import JOB_OUT
from ..triage import group_failures, summarize, unpack_error
from ..utilization import build_profile

#: The time the utilization and finished-per-minute charts cover: longer shows more of the
#: campaign, but reads more run rows at every refresh.
WINDOW_S = 3600.0
#: The charts' time bins: at most MAX_BINS, none shorter than MIN_BIN_S (shorter bins make
#: "finished per minute" a comb of single runs).
MAX_BINS = 60
MIN_BIN_S = 5.0
#: Failed rows the page groups (the first ones by id); `balsam-futures failures` reads all.
FAILED_SAMPLE = 2000
#: Launchers and batch jobs listed (the newest ones).
NEWEST = 20
#: Lines of a task's job.out the task page shows, read from the end of the file.
TAIL_LINES = 50
TAIL_BYTES = 64 * 1024


def counts(store: Any) -> dict[str, Any]:
    """Tasks by state (one GROUP BY), and their total."""
    by_state = store.count_by_state()
    return {"counts": by_state, "total": sum(by_state.values())}


def summary(store: Any, now: float | None = None) -> dict[str, Any]:
    """Utilization and finished runs per minute over WINDOW_S, failure groups, launchers,
    batch jobs and the slowest task names (the counts come apart, from ``counts``, so the
    page shows them as soon as they are read)."""
    now = time.time() if now is None else now
    start = now - WINDOW_S
    runs = store.list_runs(start, now)
    launchers = store.list_launchers()
    end = now
    if runs:
        # Runs are recorded as they end: after the last recorded end, the ones still going
        # would read as idle nodes, so the curves stop there.
        start = max(start, min(r["started_at"] for r in runs))
        end = max(r["ended_at"] for r in runs)
    bins = max(1, min(MAX_BINS, int((end - start) / MIN_BIN_S)))
    prof = build_profile(runs, launchers, start, end, bins=bins)
    per_minute = 60.0 / prof.bin_seconds if prof.bin_seconds else 0.0
    failed = store.failed_page((), 0, FAILED_SAMPLE)
    groups = [g.as_dict() for g in group_failures(failed)[:10]]
    for g in groups:
        g["task_ids"] = g["task_ids"][:5]
    jobs = store.batch_jobs() if hasattr(store, "batch_jobs") else []
    return {
        "now": now,
        "profile": {"times": prof.times, "node": prof.node_utilization(),
                    "gpu": prof.gpu_utilization() if any(prof.total_gpus) else [],
                    "finished_per_minute": [n * per_minute for n in prof.finished]},
        "failures": groups,
        "failures_sampled": len(failed) >= FAILED_SAMPLE,
        "launchers": [{k: la[k] for k in ("id", "hostname", "state", "started_at",
                                          "heartbeat_at", "batch_job_id")}
                      for la in launchers[-NEWEST:]],
        "batch_jobs": [{k: j.get(k) for k in ("id", "scheduler", "scheduler_id", "state",
                                              "num_nodes", "queue", "created_at")}
                       for j in jobs[-NEWEST:]],
        "slowest": store.slowest_names(now - WINDOW_S, 10),
    }


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (read from its end; "" if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def job_out_path(row: dict[str, Any], site: str | None = None) -> Path | None:
    """Where a task's ``job.out`` is: in its own working directory if it has one, else in
    the site's default place for it (as ``_shell_run.default_workdir`` chooses it).  A
    Python task has one only if a launcher other than its executor's own ran it."""
    from .._shell_run import _safe_name
    from ..sitedir import resolve_site

    if row.get("workdir"):
        return Path(row["workdir"]) / JOB_OUT
    workflow = _safe_name((row.get("tags") or {}).get("workflow", "default"))
    name = _safe_name(row.get("name") or "task")
    return resolve_site(site) / "data" / workflow / f"{name}_{row['id']}" / JOB_OUT


def task_detail(store: Any, task_id: int, site: str | None = None) -> dict[str, Any] | None:
    """One task's fields, history, error (summary and traceback) and job.out tail."""
    rows = store.get_tasks([task_id])
    if not rows:
        return None
    row = rows[0]
    packed = unpack_error(row.pop("error", None))
    row.pop("result", None)
    history = store.history(task_id)
    path = job_out_path(row, site)
    out = tail(path) if path is not None else ""
    return {
        "task": row,
        "history": history,
        "error": None if packed is None else {
            "summary": summarize(packed), "traceback": str(packed.get("traceback", ""))},
        "job_out": out,
    }
