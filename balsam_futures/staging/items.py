"""From specs to transfer items: one :class:`TransferItem` per file, once the workdir exists.

A stage-in item is known from its spec alone; a stage-out item needs the files the task left,
so :func:`stage_out_items` globs the working directory after the run.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StagingError
from .specs import HTTP, LOCAL, StageIn, StageOut, is_directory_url, locate

IN, OUT = "in", "out"


@dataclass(frozen=True)
class TransferItem:
    """One file to move for one task; local sides are absolute paths, remote sides URLs."""

    task_id: int
    direction: str  # IN or OUT
    source: str
    destination: str
    sha256: str | None = None  # expected content (from an http URL's '#sha256=' fragment)


def _plain(url: str) -> str:
    """``url`` as a transport takes it: file:// becomes a path, '#sha256=' is dropped."""
    location = locate(url)
    if location.kind in (LOCAL, HTTP):
        return location.path
    return url


def stage_in_items(task_id: int, workdir: Path, specs: Sequence[StageIn]) -> list[TransferItem]:
    """The files to fetch into ``workdir`` for task ``task_id``, in the order of ``specs``."""
    items = []
    for spec in specs:
        location = locate(spec.url)
        destination = os.path.join(workdir, spec.dest)
        if spec.dest.endswith("/"):
            destination = os.path.join(destination, location.basename)
        items.append(TransferItem(task_id, IN, _plain(spec.url), os.path.normpath(destination),
                                  location.sha256))
    return items


def stage_out_items(task_id: int, workdir: Path,
                    specs: Sequence[StageOut]) -> list[TransferItem]:
    """The files of ``workdir`` to ship for task ``task_id``: each pattern's matches, sorted.

    Raises :class:`StagingError` when a pattern matches no file, or when two matches would
    land on the same destination.
    """
    items: list[TransferItem] = []
    taken: dict[str, str] = {}
    for spec in specs:
        matches = sorted(
            path for path in glob.glob(os.path.join(glob.escape(str(workdir)), spec.pattern),
                                       recursive=True)
            if os.path.isfile(path))
        if not matches:
            raise StagingError(f"stage_out: {spec.pattern!r} matched no file in {workdir}")
        target = _plain(spec.url)
        for path in matches:
            if is_directory_url(spec):
                name = os.path.basename(path)
                destination = target + name if target.endswith("/") else f"{target}/{name}"
            else:
                destination = target
            if destination in taken:
                raise StagingError(f"stage_out: {taken[destination]!r} and {path!r} would both "
                                   f"go to {destination}; send them to different URLs")
            taken[destination] = path
            items.append(TransferItem(task_id, OUT, os.path.normpath(path), destination))
    return items
