"""Downloads over http(s), with one keep-alive connection per server.

    items --group by (scheme, host, port)--> HttpBatch --one http.client connection-->
        per distinct URL: skip check (sha256, or HEAD size + Last-Modified), one GET into a
        temporary file, checksum verified, os.replace; the other items wanting the same URL
        get a local copy of it.

Stage-in only: :func:`~balsam_futures.staging.specs.parse_stage_out` refuses http URLs.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import ssl
from collections.abc import Sequence
from contextlib import suppress
from urllib.parse import urlsplit

from .base import Batch, Outcome, TransferOptions, failed
from .items import TransferItem
from .local import CHUNK_BYTES, copy_file, same_content, sha256_of, temporary_name

# 4xx answers will not change on retry, except these (timeout, too many requests).
_RETRYABLE_4XX = {408, 425, 429}


class _Refused(Exception):
    def __init__(self, words: str, permanent: bool = False) -> None:
        super().__init__(words)
        self.permanent = permanent


def _status_words(response: http.client.HTTPResponse) -> str:
    words = f"HTTP {response.status} {response.reason}"
    if response.status in (301, 302, 303, 307, 308):
        words += f" (redirected to {response.getheader('Location')}; stage that URL instead)"
    return words


class HttpBatch(Batch):
    """Items whose sources live on one server (same scheme, host and port)."""

    def __init__(self, items, options, scheme: str, host: str, port: int | None) -> None:
        super().__init__(items, options)
        self.scheme, self.host, self.port = scheme, host, port
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.options.timeout,
                    context=ssl.create_default_context())
            else:
                self._connection = http.client.HTTPConnection(self.host, self.port,
                                                              timeout=self.options.timeout)
        return self._connection

    def _request(self, method: str, url: str) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._connect()
        try:
            connection.request(method, target)
            return connection.getresponse()
        except BaseException:
            # A broken connection is dropped; the next request opens a fresh one.
            connection.close()
            self._connection = None
            raise

    def run(self) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(self.items)
        by_url: dict[tuple[str, str | None], list[int]] = {}
        for index, item in enumerate(self.items):
            by_url.setdefault((item.source, item.sha256), []).append(index)
        try:
            for (url, sha256), indexes in by_url.items():
                self._fetch(url, sha256, indexes, outcomes)
        finally:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        return outcomes  # type: ignore[return-value]

    def _fetch(self, url: str, sha256: str | None, indexes: list[int],
               outcomes: list[Outcome | None]) -> None:
        """Download ``url`` once for all the items that want it."""
        wanting = []
        head: list = []  # the server's (Content-Length, Last-Modified), asked once per URL
        for index in indexes:
            item = self.items[index]
            try:
                present = self._present(item, head)
            except (OSError, http.client.HTTPException) as exc:
                outcomes[index] = failed(item, f"HEAD {url}: {type(exc).__name__}: {exc}")
                continue
            if present:
                outcomes[index] = Outcome(skipped=1)
            else:
                wanting.append(index)
        if not wanting:
            return
        first = self.items[wanting[0]]
        try:
            self._download(url, sha256, first.destination)
        except _Refused as exc:
            for index in wanting:
                outcomes[index] = failed(self.items[index], exc.args[0],
                                         permanent=exc.permanent)
            return
        except (OSError, http.client.HTTPException) as exc:
            for index in wanting:
                outcomes[index] = failed(self.items[index], f"{type(exc).__name__}: {exc}")
            return
        outcomes[wanting[0]] = Outcome(copied=1)
        for index in wanting[1:]:
            item = self.items[index]
            try:
                if not same_content(first.destination, item.destination):
                    copy_file(first.destination, item.destination)
                outcomes[index] = Outcome(copied=1)
            except OSError as exc:
                outcomes[index] = failed(item, f"{type(exc).__name__}: {exc}")

    def _present(self, item: TransferItem, head: list) -> bool:
        """Whether the destination already holds the URL's content.

        With a '#sha256=' the local file's checksum decides, without asking the server.
        Otherwise the size must equal the server's Content-Length and the file must not be
        older than Last-Modified (a server that sends neither never lets a file be skipped).
        """
        destination = item.destination
        if not os.path.isfile(destination):
            return False
        if item.sha256:
            return sha256_of(destination) == item.sha256
        if not head:
            response = self._request("HEAD", item.source)
            response.read()
            ok = response.status == 200
            head.extend((ok and response.getheader("Content-Length"),
                         ok and response.getheader("Last-Modified")))
        length, modified = head
        if not length or not modified:
            return False
        try:
            server_time = email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            return False
        stat = os.stat(destination)
        return stat.st_size == int(length) and stat.st_mtime >= server_time

    def _download(self, url: str, sha256: str | None, destination: str) -> None:
        response = self._request("GET", url)
        if response.status != 200:
            response.read()
            raise _Refused(_status_words(response),
                           permanent=400 <= response.status < 500
                           and response.status not in _RETRYABLE_4XX)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        partial = temporary_name(destination)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(partial, "wb") as stream:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    stream.write(chunk)
                    size += len(chunk)
            length = response.getheader("Content-Length")
            if length is not None and size != int(length):
                raise _Refused(f"short read: got {size} of {length} bytes")
            if sha256 and digest.hexdigest() != sha256:
                raise _Refused(f"sha256 mismatch: the URL says {sha256}, the downloaded "
                               f"{size} bytes have {digest.hexdigest()}")
            os.replace(partial, destination)
        except BaseException:
            with suppress(OSError):
                os.unlink(partial)
            raise


def plan(items: Sequence[TransferItem], options: TransferOptions) -> list[Batch]:
    """One batch (one connection) per (scheme, host, port)."""
    groups: dict[tuple[str, str, int | None], list[TransferItem]] = {}
    for item in items:
        parts = urlsplit(item.source)
        key = (parts.scheme.lower(), parts.hostname or "", parts.port)
        groups.setdefault(key, []).append(item)
    return [HttpBatch(group, options, *key) for key, group in groups.items()]
