"""rsync transfers: ``rsync://host[:port]/module/path`` and ``[user@]host:path`` (over ssh).

    items --group by (remote endpoint, destination directory, direction)--> RsyncBatch
        -> one ``rsync -a --checksum --itemize-changes SRC... DESTDIR/`` process

An item whose destination renames the file (its basename differs from the source's) gets a
command of its own, ``rsync ... SRC DEST``.  ``--checksum`` makes rsync skip a file whose
size and checksum already match; ``--itemize-changes`` prints a line for each file it sent,
so the files it does not name were skipped.  rsync writes each file under a temporary name
and renames it when complete, so a half-sent file never looks present.  A remote destination
directory must exist up to its last level, which rsync creates (``--mkpath`` would create
them all, but needs rsync 3.2.3, newer than many clusters have).
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from collections.abc import Sequence

from .base import Batch, BatchFailed, Outcome, TransferOptions, failed
from .items import IN, TransferItem
from .specs import RSYNC, locate

#: -a keeps modes and times (so a later run's quick checks agree), --checksum skips by
#: content, -s (--protect-args) passes remote names with spaces through unsplit.
OPTIONS = ("-a", "--checksum", "--itemize-changes", "--protect-args")
#: How much of rsync's stderr an error carries: its last lines name the cause.
STDERR_TAIL_CHARS = 2000
#: "Partial transfer due to error" and "some source files vanished" (rsync(1), EXIT VALUES):
#: the rest of the batch went through.
PARTIAL_CODES = (23, 24)
# "%i %n": 11 change flags, a space, the name; '<' sent, '>' received (see rsync(1),
# --itemize-changes).  Lines starting '.', 'c', 'h' or '*' changed no file's content.
_ITEMIZED = re.compile(r"^([<>])f\S{9,10} (.+)$")


def remote_side(item: TransferItem) -> str:
    return item.source if item.direction == IN else item.destination


def remote_directory(url: str) -> str:
    """The directory URL holding remote file ``url``, with a trailing '/'."""
    location = locate(url)
    head = posixpath.dirname(location.path)
    if location.kind == RSYNC:
        return f"{location.endpoint}{head}/"
    return f"{location.endpoint}:{head}/" if head else f"{location.endpoint}:"


def file_name(url: str) -> str:
    """The file name at the end of a local path or an rsync/ssh URL."""
    return locate(url).basename


def render_argv(rsync: str, sources: Sequence[str], destination: str) -> list[str]:
    """The rsync command line that copies ``sources`` to ``destination``."""
    return [rsync, *OPTIONS, *sources, destination]


def parse_itemized(stdout: str) -> set[str]:
    """The names of the files rsync sent or received, from its --itemize-changes lines."""
    return {match.group(2) for line in stdout.splitlines() if (match := _ITEMIZED.match(line))}


class RsyncBatch(Batch):
    """Items sharing one endpoint, one destination directory and one direction; ``target``
    is that directory (or, for a single renaming item, its destination)."""

    def __init__(self, items, options, target: str) -> None:
        super().__init__(items, options)
        self.target = target

    def argv(self) -> list[str]:
        sources = [item.source for item in self.items]
        return render_argv(self.options.rsync, sources, self.target)

    def run(self) -> list[Outcome]:
        for item in self.items:
            if item.direction == IN:
                os.makedirs(os.path.dirname(item.destination), exist_ok=True)
        argv = self.argv()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=self.options.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise BatchFailed(f"the rsync program {self.options.rsync!r} was not found; "
                              "install rsync or pass Transfers(rsync=PATH)",
                              permanent=True) from None
        except subprocess.TimeoutExpired:
            raise BatchFailed(f"rsync ran past its {self.options.timeout:g} s time limit: "
                              f"{' '.join(argv)}") from None
        sent = parse_itemized(proc.stdout)
        words = f"rsync exited with code {proc.returncode}: " + \
            proc.stderr.strip()[-STDERR_TAIL_CHARS:]
        if proc.returncode in PARTIAL_CODES and len(self.items) > 1:
            # The files it names did arrive; the others failed, or were already there (rsync
            # does not say which), and get an attempt of their own.
            return [Outcome(copied=1) if self._sent(item, sent)
                    else failed(item, words, shared=True)
                    for item in self.items]
        if proc.returncode != 0:
            raise BatchFailed(words)
        return [Outcome(copied=1) if self._sent(item, sent) else Outcome(skipped=1)
                for item in self.items]

    def _sent(self, item: TransferItem, sent: set[str]) -> bool:
        if len(self.items) == 1:
            return bool(sent)
        return file_name(item.destination) in sent


def plan(items: Sequence[TransferItem], options: TransferOptions) -> list[Batch]:
    """One rsync process per (remote endpoint, destination directory, direction)."""
    groups: dict[tuple[str, str, str], list[TransferItem]] = {}
    batches: list[Batch] = []
    for item in items:
        if file_name(item.source) != file_name(item.destination):
            batches.append(RsyncBatch([item], options, item.destination))
            continue
        remote = locate(remote_side(item))
        if item.direction == IN:
            directory = os.path.dirname(item.destination) + "/"
        else:
            directory = remote_directory(item.destination)
        groups.setdefault((remote.endpoint, directory, item.direction), []).append(item)
    batches.extend(RsyncBatch(group, options, directory)
                   for (_, directory, _), group in groups.items())
    return batches
