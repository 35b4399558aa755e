"""Why tasks failed, in one line each, and failed runs grouped by cause.

    launcher: a run ends in RUN_ERROR ──error_summary(error blob)──> the history row's message
    triage:   failed rows, read in pages ──signature(row)──> FailureGroup per normalized cause

A signature is the exception type and its message with the parts that differ from task to
task masked (numbers, paths, ids, hex addresses), plus the innermost frame of the task's own
code; for a shell task, its exit code or signal and the last line of its output, masked the
same way.  Nothing is stored: groups are computed from ``bf_tasks.error`` each time, so the
schema does not change, and only failed rows are read, ``PAGE`` at a time.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Longest one-line summary kept in a history row: enough for an exception's message, short
#: enough that a campaign of a million failures does not double the history table.
SUMMARY_CHARS = 300
#: Failed rows read per query while grouping: bigger pages mean fewer round trips, smaller
#: ones less memory (each row carries its packed error, a few kB).
PAGE = 2000

# Masks, most specific first: an address would otherwise read as a number and a path.
_MASKS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                r"[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<id>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[~.]?/[^\s'\"():,]+)+"), "<path>"),
    (re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"), "<n>"),
)
_SHELL_TYPES = ("ShellTaskError", "ShellCommandNotFound")
_EXIT = re.compile(r"(exited with code -?\d+|was stopped by signal \w+)")
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
#: Frames that belong to balsam_futures itself or Python, not to the task's own code.
_OWN_CODE_SKIP = ("balsam_futures", "/lib/python", "site-packages", "<frozen")


def mask(text: str) -> str:
    """``text`` with numbers, paths, ids and hex addresses replaced by placeholders."""
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return text


def unpack_error(blob: bytes | None) -> dict[str, Any] | None:
    """The packed error of a run (see ``serialization.dump_exception``) without rebuilding
    the exception: type, message and traceback text; None if there is none or it is
    unreadable."""
    if not blob:
        return None
    try:
        packed = pickle.loads(blob)
    except Exception:  # noqa: BLE001 - an unreadable error still fails its task
        return None
    return packed if isinstance(packed, dict) and "type" in packed else None


def _short_type(qualified: str) -> str:
    return qualified.rsplit(".", 1)[-1]


def _shell_parts(message: str) -> tuple[str, str]:
    """(how the command ended, its last output line) from a ShellTaskError's message."""
    found = _EXIT.search(message)
    how = found.group(1) if found else message.splitlines()[0] if message else ""
    how = how.replace("exited with code", "exit code").replace("was stopped by signal",
                                                                "signal")
    last = ""
    if "last lines of job.out:" in message:
        tail = message.split("last lines of job.out:", 1)[1].strip().splitlines()
        last = tail[-1].strip() if tail else ""
    return how, last


def summarize(packed: dict[str, Any]) -> str:
    """One line for a history row: ``Type: message`` (first line), or for a shell task
    ``exit code N: last output line``."""
    kind = _short_type(str(packed.get("type", "")))
    message = str(packed.get("message", ""))
    if kind in _SHELL_TYPES:
        how, last = _shell_parts(message)
        text = f"{how}: {last}" if last else how
    else:
        first = message.strip().splitlines()[0] if message.strip() else ""
        text = f"{kind}: {first}" if first else kind
    return text[:SUMMARY_CHARS]


def error_summary(blob: bytes | None, default: str = "") -> str:
    """The one-line summary of a packed error (``default`` if it cannot be read)."""
    packed = unpack_error(blob)
    return summarize(packed) if packed is not None else default


def innermost_frame(traceback_text: str) -> str:
    """``function (file:line)`` of the innermost traceback frame in the task's own code."""
    frames = _FRAME.findall(traceback_text or "")
    own = [f for f in frames if not any(s in f[0] for s in _OWN_CODE_SKIP)]
    if not own:
        return ""
    path, line, func = own[-1]
    return f"{func} ({path.rsplit('/', 1)[-1]}:{line})"


def signature(packed: dict[str, Any] | None, message: str = "") -> str:
    """The normalized cause of a failed run: what a group of failures shares.  ``message``
    (the history summary) stands in when the packed error is missing."""
    if packed is None:
        return mask(message) or "(no error recorded)"
    kind = _short_type(str(packed.get("type", "")))
    text = str(packed.get("message", ""))
    if kind in _SHELL_TYPES:
        how, last = _shell_parts(text)
        return f"shell {mask(how)}: {mask(last)}".rstrip(": ")
    first = text.strip().splitlines()[0] if text.strip() else ""
    where = innermost_frame(str(packed.get("traceback", "")))
    sig = f"{kind}: {mask(first)}"
    return f"{sig} @ {where}" if where else sig


def group_id(sig: str) -> str:
    """A short stable name for a signature (what ``--group`` takes)."""
    return hashlib.sha1(sig.encode()).hexdigest()[:8]


@dataclass
class FailureGroup:
    """Failed tasks that share one signature."""

    group: str
    signature: str
    count: int = 0
    task_ids: list[int] = field(default_factory=list)
    first_seen: float | None = None
    last_seen: float | None = None
    example_id: int | None = None
    example_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "signature": self.signature, "count": self.count,
                "task_ids": list(self.task_ids), "first_seen": self.first_seen,
                "last_seen": self.last_seen, "example_id": self.example_id,
                "example_error": self.example_error}


def group_failures(rows: Iterable[dict[str, Any]]) -> list[FailureGroup]:
    """Groups of failed ``rows`` (each with id, error, updated_at), largest first."""
    groups: dict[str, FailureGroup] = {}
    for row in rows:
        packed = unpack_error(row.get("error"))
        sig = signature(packed, row.get("message", ""))
        gid = group_id(sig)
        g = groups.get(gid)
        if g is None:
            g = groups[gid] = FailureGroup(gid, sig, example_id=row["id"],
                                           example_error=summarize(packed) if packed else
                                           row.get("message", ""))
        g.count += 1
        g.task_ids.append(row["id"])
        at = row.get("updated_at")
        if at is not None:
            g.first_seen = at if g.first_seen is None else min(g.first_seen, at)
            g.last_seen = at if g.last_seen is None else max(g.last_seen, at)
    return sorted(groups.values(), key=lambda g: (-g.count, g.signature))


__all__ = ["FailureGroup", "error_summary", "group_failures", "group_id", "innermost_frame",
           "mask", "signature", "summarize", "unpack_error"]
