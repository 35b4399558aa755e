"""Statements on the store's own rows (``bf_meta``): schema version, blockage, deletions."""

from __future__ import annotations

from sqlalchemy import Integer, Text, cast, insert, select, text, update

from ..schema import meta
from .common import bound


def read_meta():
    """All key/value rows of the meta table."""
    return select(meta.c.key, meta.c.value)


def write_meta():
    """Insert one meta row (key, value)."""
    return insert(meta)


def update_meta():
    """Set meta row :b_key to :b_value."""
    return update(meta).where(meta.c.key == bound("b_key")).values(value=bound("b_value"))


def pg_lock_schema():
    """PostgreSQL: the transaction lock under which one process creates the schema."""
    return text("SELECT pg_advisory_xact_lock(hashtext('bf_schema'))")


def mark_blocked():
    """Record :now as the end of a time the store was blocked for every writer."""
    return update(meta).where(meta.c.key == "blocked_until").values(value=bound("now_text"))


def select_blocked():
    """When the store was last blocked for every writer (no row or '0': never)."""
    return select(meta.c.value).where(meta.c.key == "blocked_until")


def count_deletions():
    """Add :n to the store's count of deleted tasks (kept in the meta table)."""
    return update(meta).where(meta.c.key == "deletions").values(
        value=cast(cast(meta.c.value, Integer) + bound("n"), Text))


def select_deletions():
    """The store's count of deleted tasks (no row: none ever)."""
    return select(meta.c.value).where(meta.c.key == "deletions")
