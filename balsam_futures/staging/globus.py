"""Globus transfers: ``globus://ENDPOINT_UUID/path``, the other side being this site's own
endpoint (``globus_endpoint``, local paths) or another Globus URL.

    items --group by (source endpoint, destination endpoint)--> GlobusBatch
        -> ONE TransferData (sync_level="checksum", verify_checksum=True) per pair
        -> submit_transfer -> task_wait(timeout, polling_interval) -> get_task: SUCCEEDED?

Globus's checksum sync skips files already present with the same checksum; it reports only
a task-wide ``files_skipped``, so items count as skipped only when every file of the task was.
``globus_sdk`` is imported here only, on first use: it is an optional dependency.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .. import config
from ..errors import StagingError
from .base import Batch, BatchFailed, Outcome, TransferOptions, failed
from .items import IN, TransferItem
from .specs import GLOBUS, locate

#: Seconds between Globus task polls: shorter reacts sooner to a finished transfer but spends
#: API calls (Globus rate-limits clients); transfers take minutes, so waiting 10 s costs little.
POLLING_INTERVAL_S = 10
TOKEN_VARIABLE = "GLOBUS_TOKEN"
ENDPOINT_VARIABLE = "GLOBUS_ENDPOINT"
INSTALL_HINT = "pip install 'balsam_futures[globus]'"


def environ_setting(name: str) -> str | None:
    """``BALSAM_FUTURES_<name>`` (config.py: GLOBUS_ENDPOINT, GLOBUS_TOKEN)."""
    return config.setting(name)


def import_sdk() -> Any:
    try:
        import globus_sdk
    except ImportError as exc:
        raise StagingError(f"globus:// transfers need the globus-sdk package ({exc}); "
                           f"{INSTALL_HINT}") from exc
    return globus_sdk


def build_client() -> Any:
    """A TransferClient authorized by the access token in BALSAM_FUTURES_GLOBUS_TOKEN."""
    globus_sdk = import_sdk()
    token = environ_setting(TOKEN_VARIABLE)
    if not token:
        raise StagingError(f"globus:// transfers need a Globus transfer access token in "
                           f"{config.PREFIX}{TOKEN_VARIABLE} (or pass Transfers(globus_client=))")
    return globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(token))


def endpoint_path(url: str, local_endpoint: str | None) -> tuple[str, str]:
    """(endpoint id, path on it) of one side of an item."""
    location = locate(url)
    if location.kind == GLOBUS:
        return location.endpoint, location.path
    if not local_endpoint:
        raise StagingError(f"{url} is a local path in a Globus transfer, but this site's "
                           f"Globus endpoint is not configured; set "
                           f"{config.PREFIX}{ENDPOINT_VARIABLE} or pass "
                           "Transfers(globus_endpoint=)")
    return local_endpoint, location.path


def _error_words(task: Any) -> str:
    """Globus's own account of a task that did not succeed."""
    words = [f"Globus task {task.get('task_id')} {task.get('status')}"]
    if task.get("nice_status"):
        words.append(f"nice_status={task.get('nice_status')}")
    fatal = task.get("fatal_error")
    if fatal:
        if isinstance(fatal, dict):
            fatal = ": ".join(str(fatal[k]) for k in ("code", "description") if fatal.get(k))
        words.append(f"fatal_error={fatal}")
    return ", ".join(words)


class GlobusBatch(Batch):
    """Every item between one (source endpoint, destination endpoint) pair: one Globus task."""

    def __init__(self, items, options, source_endpoint: str, destination_endpoint: str,
                 paths: list[tuple[str, str]]) -> None:
        super().__init__(items, options)
        self.source_endpoint = source_endpoint
        self.destination_endpoint = destination_endpoint
        self.paths = paths

    def transfer_data(self) -> Any:
        globus_sdk = import_sdk()
        tasks = sorted({item.task_id for item in self.items})
        label = "balsam_futures tasks " + ",".join(map(str, tasks))
        data = globus_sdk.TransferData(self.source_endpoint, self.destination_endpoint,
                                       label=label[:128], sync_level="checksum",
                                       verify_checksum=True)
        for source_path, destination_path in self.paths:
            data.add_item(source_path, destination_path)
        return data

    def run(self) -> list[Outcome]:
        client = self.options.globus_client()
        for item in self.items:
            if item.direction == IN and locate(item.destination).kind != GLOBUS:
                os.makedirs(os.path.dirname(item.destination), exist_ok=True)
        try:
            submitted = client.submit_transfer(self.transfer_data())
            task_id = submitted["task_id"]
            done = client.task_wait(task_id, timeout=max(1, int(self.options.timeout)),
                                    polling_interval=POLLING_INTERVAL_S)
            if not done:
                raise BatchFailed(f"Globus task {task_id} did not finish within "
                                  f"{self.options.timeout:g} s")
            task = client.get_task(task_id)
        except (BatchFailed, StagingError):
            raise
        except Exception as exc:  # globus_sdk's API and network errors carry their words
            raise BatchFailed(f"Globus: {type(exc).__name__}: {exc}") from exc
        if task.get("status") != "SUCCEEDED":
            raise BatchFailed(_error_words(task))
        if task.get("files_skipped") and task.get("files_skipped") == len(self.items):
            return [Outcome(skipped=1) for _ in self.items]
        return [Outcome(copied=1) for _ in self.items]


def plan(items: Sequence[TransferItem], options: TransferOptions) -> list[Batch]:
    """One batch per (source endpoint, destination endpoint) pair; an item whose local side
    has no endpoint fails alone, before anything is submitted."""
    groups: dict[tuple[str, str], tuple[list, list]] = {}
    batches: list[Batch] = []
    endpoint = options.globus_endpoint or environ_setting(ENDPOINT_VARIABLE)
    for item in items:
        try:
            source = endpoint_path(item.source, endpoint)
            destination = endpoint_path(item.destination, endpoint)
        except StagingError as exc:
            batches.append(_Refused([item], options, str(exc)))
            continue
        group = groups.setdefault((source[0], destination[0]), ([], []))
        group[0].append(item)
        group[1].append((source[1], destination[1]))
    batches.extend(GlobusBatch(group, options, source, destination, paths)
                   for (source, destination), (group, paths) in groups.items())
    return batches


class _Refused(Batch):
    """An item that cannot be submitted (a setting is missing): it fails without retries."""

    def __init__(self, items, options, words: str) -> None:
        super().__init__(items, options)
        self.words = words

    def run(self) -> list[Outcome]:
        return [failed(item, self.words, permanent=True) for item in self.items]
