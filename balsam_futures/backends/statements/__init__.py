"""Every SQL statement of the store, each built by one named function.

No other module outside ``backends/`` builds SQL.  Statements take bound parameters so that
SQLAlchemy compiles each one once and caches it; a store runs one by its name here
(``Connections._stmt("finish_running")``), so this package's namespace is the list of them.

    lifecycle.py      a task's trip: create, claim, start, finish, cancel, kill; events;
                      dependencies; PostgreSQL's many-row forms next to their Core statements
    leases.py         launcher rows, heartbeats, leases and the sweep of dead launchers
    task_queries.py   what users and the CLI ask: filtered tasks, histories, counts, runs
    batchjobs.py      batch jobs and the backlog the queue service sizes them by
    estimates.py      run-time estimates per kind, and expected run times of tasks
    cache_ops.py      memoization: the cache index, hits, tasks that follow identical ones
    staging_ops.py    data staging: what transfer threads claim, and how transfers end
    meta.py           the store's own rows: schema version, blockage, deletion count
    common.py         bind placeholders, state lists, tag filters

Each module is named after the store module that runs its statements (``leases.py`` runs
``statements/leases.py``...); ``lifecycle.py`` serves ``executor_ops.py`` and
``launcher_ops.py``.
"""

from .batchjobs import (
    BATCH_JOB_INSERT_COLUMNS,
    backlog_summary,
    insert_batch_job,
    select_batch_jobs,
    update_batch_job,
)
from .cache_ops import (
    cache_counts,
    clear_cache,
    copy_cached_results,
    count_cache_hit,
    delete_cache_entries,
    delete_follow_edge,
    detach_follower,
    finish_follower,
    insert_cache_entry,
    move_cache_entry,
    orphan_follower,
    pg_lock_cache_keys,
    select_cache_entries,
    select_cache_keys,
    select_cache_list,
    select_followers_of,
)
from .estimates import (
    WATERMARK_KEY,
    backlog_work,
    claim_probe,
    count_ahead,
    fill_expected,
    pg_try_fill_lock,
    pg_try_kind_lock,
    refresh_expected,
    select_estimate_keys,
    select_explained_task,
    select_kind,
    select_kinds,
    select_live_launchers,
    select_too_long,
    set_watermark,
    upsert_kind,
)
from .leases import (
    REQUEUED_TO,
    insert_launcher,
    lock_held_by,
    requeue,
    select_expired_launchers,
    select_orphaned_launchers,
    set_launcher_state,
    touch_launcher,
)
from .lifecycle import (
    CACHE_FIELDS,
    CLAIM_COLUMNS,
    HISTORY_FIELDS,
    RUN_FIELDS,
    STAGING_FIELDS,
    TASK_CREATION_COLUMNS,
    TASK_OWN_FIELDS,
    any_dependency,
    delete_tasks,
    finish_running,
    insert_dependencies,
    insert_history,
    insert_runs,
    insert_tasks,
    latest_event_id,
    lock_cancellable,
    mark_claimed,
    mark_started,
    pg_claim,
    pg_commit_without_flush,
    pg_finish_running_values,
    pg_insert_history_values,
    pg_insert_tasks_shared,
    pg_mark_started_values,
    pg_next_task_ids,
    pg_notify_tasks,
    pg_unclaim,
    release_child,
    request_kill,
    select_children_of,
    select_claimable,
    select_events,
    select_ids_tagged,
    select_kill_requests,
    select_outcomes,
    select_parent_results,
    select_parents_of,
    select_running_of,
    select_unfit,
    set_state,
    sqlite_task_sequence,
)
from .meta import (
    count_deletions,
    mark_blocked,
    pg_lock_schema,
    read_meta,
    select_blocked,
    select_deletions,
    update_meta,
    write_meta,
)
from .staging_ops import (
    STAGING_COLUMNS,
    any_awaiting_stage_in,
    end_staging,
    mark_staging_in,
    select_awaiting_stage_in,
    select_staging_out_of,
)
from .task_queries import (
    QUERY_COLUMNS,
    QUERY_OPS,
    count_by_state,
    query_count_by_state,
    query_lock_ids,
    query_select,
    query_update,
    select_histories,
    select_history,
    select_launchers,
    select_runs,
    select_task_rows,
)

__all__ = [
    "STAGING_COLUMNS", "any_awaiting_stage_in", "end_staging", "mark_staging_in",
    "select_awaiting_stage_in", "select_staging_out_of",
    "cache_counts", "clear_cache", "copy_cached_results", "count_cache_hit",
    "delete_cache_entries", "delete_follow_edge", "detach_follower", "finish_follower",
    "insert_cache_entry", "move_cache_entry", "pg_lock_cache_keys", "select_cache_entries",
    "select_cache_keys", "select_cache_list", "orphan_follower", "select_followers_of",
    "BATCH_JOB_INSERT_COLUMNS", "CACHE_FIELDS", "CLAIM_COLUMNS", "HISTORY_FIELDS",
    "QUERY_COLUMNS", "QUERY_OPS", "REQUEUED_TO", "RUN_FIELDS", "STAGING_FIELDS",
    "TASK_CREATION_COLUMNS", "TASK_OWN_FIELDS", "WATERMARK_KEY",
    "backlog_work", "claim_probe", "count_ahead", "fill_expected", "select_explained_task",
    "select_live_launchers", "pg_try_fill_lock", "pg_try_kind_lock", "refresh_expected",
    "select_estimate_keys", "select_kind", "select_kinds", "select_too_long", "set_watermark",
    "upsert_kind",
    "any_dependency", "backlog_summary", "count_by_state", "count_deletions", "delete_tasks",
    "finish_running", "insert_batch_job", "insert_dependencies", "insert_history",
    "insert_launcher", "insert_runs", "insert_tasks", "latest_event_id", "lock_cancellable",
    "lock_held_by", "mark_blocked", "mark_claimed", "mark_started", "pg_claim",
    "pg_commit_without_flush", "pg_finish_running_values", "pg_insert_history_values",
    "pg_insert_tasks_shared", "pg_lock_schema", "pg_mark_started_values", "pg_next_task_ids",
    "pg_notify_tasks",
    "pg_unclaim", "query_count_by_state", "query_lock_ids", "query_select", "query_update",
    "read_meta", "release_child", "request_kill", "requeue", "select_batch_jobs",
    "select_blocked", "select_children_of", "select_claimable", "select_deletions",
    "select_events", "select_expired_launchers", "select_histories", "select_history",
    "select_ids_tagged", "select_kill_requests", "select_launchers", "select_orphaned_launchers",
    "select_outcomes", "select_parent_results", "select_parents_of", "select_runs",
    "select_running_of", "select_task_rows", "select_unfit", "set_launcher_state", "set_state",
    "sqlite_task_sequence", "touch_launcher", "update_batch_job", "update_meta", "write_meta",
]
