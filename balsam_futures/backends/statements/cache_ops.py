"""Statements of memoization: the cache index (bf_cache), hits and the tasks that follow
an identical task in flight."""

from __future__ import annotations

from sqlalchemy import delete, func, select, text, update

from ...tasks import TaskState
from ..schema import cache, dependencies, tasks
from .common import bound


def select_cache_entries(keys: list[str]):
    """(key, task id, task state) of the cache entries of ``keys``."""
    return (select(cache.c.key, cache.c.task_id, tasks.c.state)
            .join(tasks, tasks.c.id == cache.c.task_id)
            .where(cache.c.key.in_(keys)))


def pg_lock_cache_keys():
    """PostgreSQL: serialize the submitters of the same keys (:keys, an array) until commit,
    so that two of them cannot both miss and both run: a key absent from bf_cache has no
    row to lock."""
    return text("SELECT pg_advisory_xact_lock(hashtextextended('bf_cache:' || k, 0)) "
                "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k")


def delete_cache_entries(keys: list[str]):
    """Drop the entries of ``keys`` (replaced by a new leader in the same transaction)."""
    return delete(cache).where(cache.c.key.in_(keys))


def insert_cache_entry():
    """A cache entry: key :key is answered by task :task_id."""
    return cache.insert().values(key=bound("key"), task_id=bound("task_id"),
                                 kind=bound("kind"), created_at=bound("now"), hits=0)


def count_cache_hit():
    """Entry :key answered one more submission at :now."""
    return (update(cache).where(cache.c.key == bound("key"))
            .values(hits=cache.c.hits + bound("n"), last_hit_at=bound("now")))


def copy_cached_results(ids: list[int]):
    """Tasks ``ids`` take the result (and return code) of the task each was cached from."""
    source = tasks.alias("source")
    take = lambda column: (select(column).where(source.c.id == tasks.c.cached_from)  # noqa: E731
                           .scalar_subquery())
    return (update(tasks).where(tasks.c.id.in_(ids))
            .values(result=take(source.c.result), return_code=take(source.c.return_code)))


def finish_follower():
    """Follower :b_id (AWAITING_PARENTS) takes its leader's result: JOB_FINISHED."""
    source = tasks.alias("source")
    take = lambda column: (select(column).where(source.c.id == tasks.c.cached_from)  # noqa: E731
                           .scalar_subquery())
    return (update(tasks)
            .where(tasks.c.id == bound("b_id"),
                   tasks.c.state == TaskState.AWAITING_PARENTS.value)
            .values(state=TaskState.JOB_FINISHED.value, result=take(source.c.result),
                    return_code=take(source.c.return_code), updated_at=bound("b_now")))


def detach_follower():
    """Follower :b_id stops following (its leader did not succeed): it runs on its own."""
    return (update(tasks).where(tasks.c.id == bound("b_id"))
            .values(cached_from=None, num_parents=tasks.c.num_parents - 1))


def delete_follow_edge():
    """The dependency edge from follower :b_id to the leader it followed, :b_parent."""
    return delete(dependencies).where(dependencies.c.child_id == bound("b_id"),
                                      dependencies.c.parent_id == bound("b_parent"))


def move_cache_entry():
    """Entry :key, answered by task :b_parent that did not succeed, is answered by the task
    that followed it (:b_id), which now runs."""
    return (update(cache).where(cache.c.key == bound("key"),
                                cache.c.task_id == bound("b_parent"))
            .values(task_id=bound("b_id")))


def select_cache_list(kind: bool, older_than: bool):
    """Cache entries with their task's state, size of result and hits, newest first."""
    stmt = (select(cache.c.key, cache.c.kind, cache.c.task_id, tasks.c.state,
                   cache.c.created_at, cache.c.hits, cache.c.last_hit_at,
                   func.length(tasks.c.result))
            .join(tasks, tasks.c.id == cache.c.task_id))
    return _entries_where(stmt, kind, older_than).order_by(cache.c.created_at.desc())


def clear_cache(kind: bool, older_than: bool):
    """Delete cache entries (of ``kind``; created before :before); the tasks stay."""
    return _entries_where(delete(cache), kind, older_than)


def _entries_where(stmt, kind, older_than):
    # Flags, not values: each combination is compiled once and cached by its name.
    if kind:
        stmt = stmt.where(cache.c.kind == bound("kind"))
    if older_than:
        stmt = stmt.where(cache.c.created_at < bound("before"))
    return stmt


def cache_counts():
    """(hits, followers still waiting, misses) over the tasks submitted with cache=: a hit
    took a stored result, a miss ran (or runs) itself."""
    finished = TaskState.JOB_FINISHED.value
    return select(
        func.count().filter((tasks.c.cached_from.isnot(None)) & (tasks.c.state == finished)),
        func.count().filter((tasks.c.cached_from.isnot(None)) & (tasks.c.state != finished)),
        func.count().filter(tasks.c.cached_from.is_(None)),
    ).where(tasks.c.cache_key.isnot(None))


def select_cache_keys(ids: list[int]):
    """(id, cache key) of tasks ``ids``."""
    return select(tasks.c.id, tasks.c.cache_key).where(tasks.c.id.in_(ids))


def select_followers_of(ids: list[int]):
    """(id, staging) of the tasks that follow any of tasks ``ids`` (AWAITING_PARENTS).

    Found through their edges to the task they follow (ix_bf_dependencies_parent): there is
    no index on ``cached_from``, and SQLite scanned the whole table for it, once per chunk
    of ids, in every ``rm``."""
    return (select(tasks.c.id, tasks.c.staging)
            .join(dependencies, dependencies.c.child_id == tasks.c.id)
            .where(dependencies.c.parent_id.in_(ids),
                   tasks.c.cached_from == dependencies.c.parent_id,
                   tasks.c.state == TaskState.AWAITING_PARENTS.value))


def orphan_follower():
    """Follower :b_id, whose leader was deleted, stops following (its edge went with it)."""
    return (update(tasks).where(tasks.c.id == bound("b_id"))
            .values(cached_from=None, num_parents=tasks.c.num_parents - 1))
