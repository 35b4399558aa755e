"""Local copies and links (local paths and file:// URLs on both sides).

A copy goes through a temporary name in the destination directory and then ``os.replace``,
so a file that is present under its final name is always complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from contextlib import suppress

from .base import Batch, Outcome, TransferOptions, failed
from .items import TransferItem

#: Read size for checksums: large enough for few system calls, small enough to stay in cache.
CHUNK_BYTES = 1 << 20


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def same_content(source: str, destination: str) -> bool:
    """Whether ``destination`` is a file with ``source``'s size and sha256."""
    try:
        if os.path.getsize(destination) != os.path.getsize(source):
            return False
    except OSError:
        return False
    return sha256_of(destination) == sha256_of(source)


def temporary_name(destination: str) -> str:
    """A hidden name beside ``destination``, unique to this attempt."""
    head, tail = os.path.split(destination)
    return os.path.join(head, f".{tail}.{uuid.uuid4().hex[:12]}.part")


def copy_file(source: str, destination: str) -> None:
    """Copy ``source`` to ``destination`` (parents created) so it appears complete or not at
    all."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    partial = temporary_name(destination)
    try:
        shutil.copy2(source, partial)
        os.replace(partial, destination)
    except BaseException:
        with suppress(OSError):
            os.unlink(partial)
        raise


def link_file(source: str, destination: str) -> None:
    """Point ``destination`` at ``source`` with a symlink, replacing what was there."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    partial = temporary_name(destination)
    os.symlink(source, partial)
    try:
        os.replace(partial, destination)
    except BaseException:
        with suppress(OSError):
            os.unlink(partial)
        raise



def place(item: TransferItem, link: bool) -> Outcome:
    """Copy (or link) one local item, skipping a destination that already holds its bytes."""
    source, destination = item.source, item.destination
    try:
        if not os.path.isfile(source):
            what = "is a directory" if os.path.isdir(source) else "does not exist"
            return failed(item, f"the source {what} (only files are staged)")
        if link:
            if os.path.islink(destination) and os.readlink(destination) == source:
                return Outcome(skipped=1)
            link_file(source, destination)
            return Outcome(copied=1)
        if not os.path.islink(destination) and same_content(source, destination):
            return Outcome(skipped=1)
        copy_file(source, destination)
        return Outcome(copied=1)
    except OSError as exc:
        return failed(item, f"{type(exc).__name__}: {exc}")


class LocalBatch(Batch):
    def run(self) -> list[Outcome]:
        # Links only make sense for inputs: an output linked back into the workdir would
        # vanish with it.
        return [place(item, self.options.link and item.direction == "in") for item in self.items]


def plan(items: Sequence[TransferItem], options: TransferOptions) -> list[Batch]:
    """One batch: local copies gain nothing from grouping, and each has its own outcome."""
    return [LocalBatch(items, options)] if items else []
