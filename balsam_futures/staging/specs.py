"""What a task asks to stage, checked at submit time: ``stage_in`` and ``stage_out`` specs.

    submit(stage_in=[(url, dest)], stage_out=[(pattern, url)])
        -> parse_stage_in / parse_stage_out   (TypeError/ValueError naming the field and index)
        -> StageIn / StageOut                 (stored as JSON: specs_to_json / specs_from_json)
        -> items.stage_in_items / stage_out_items, once the working directory exists

:func:`locate` turns one URL into a :class:`Location`; the transports and the planner use it
too, so a URL means the same thing at submit time and at transfer time.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

#: The URL kinds (one transport module each, except "ssh", which rsync also carries).
LOCAL, HTTP, RSYNC, SSH, GLOBUS = "local", "http", "rsync", "ssh", "globus"

_ACCEPTED = "use a local path, file://, http(s)://, rsync://, host:path or globus://ENDPOINT/path"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# scp/rsync-over-ssh form, as rsync itself recognises it: no '/' before the first ':'.
_SCP = re.compile(r"^(?:(?P<user>[^@/:]*)@)?(?P<host>\[[^\]/]*\]|[^@/:]*):(?P<path>.*)$",
                  re.DOTALL)
_SHA256_FRAGMENT = re.compile(r"^sha256=([0-9A-Fa-f]{64})$")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class StageIn:
    """A file fetched into the task's working directory before it runs."""

    url: str
    dest: str  # relative path inside the working directory; a trailing '/' keeps the basename


@dataclass(frozen=True)
class StageOut:
    """Files matching ``pattern`` in the working directory, shipped after a successful run."""

    pattern: str  # relative glob inside the working directory
    url: str


@dataclass(frozen=True)
class Location:
    """One side of a transfer, as the transports need it.

    ``path``: the local absolute path (local), the URL without its fragment (http), the path
    on the remote side (rsync, ssh, globus).  ``endpoint``: where that path lives:
    ``scheme://host:port`` (http), ``rsync://host[:port]`` (rsync), ``[user@]host`` (ssh),
    the endpoint UUID (globus), "" (local).
    """

    kind: str
    path: str
    endpoint: str = ""
    sha256: str | None = None

    @property
    def basename(self) -> str:
        return posixpath.basename(self.path.rstrip("/") if self.kind != HTTP
                                  else unquote(urlsplit(self.path).path))


def locate(url: Any) -> Location:
    """The :class:`Location` of ``url``; ``ValueError``/``TypeError`` say what is wrong."""
    if not isinstance(url, str):
        raise TypeError(f"URL must be a str, not {type(url).__name__} ({url!r})")
    if not url:
        raise ValueError(f"empty URL; {_ACCEPTED}")
    if "\0" in url:
        raise ValueError(f"URL {url!r} contains a NUL byte")
    match = _SCHEME.match(url)
    if match:
        return _locate_scheme(match.group(1).lower(), url)
    if url.startswith("/"):
        return Location(LOCAL, os.path.normpath(url))
    scp = _SCP.match(url)
    # "C:\\data" is a Windows drive, not a host called C (rsync makes the same exception).
    if scp and not re.match(r"^[A-Za-z]:\\", url):
        host, path = scp.group("host"), scp.group("path")
        if not host or host == "[]":
            raise ValueError(f"empty host in {url!r}; write host:path or user@host:path")
        if scp.group("user") == "":
            raise ValueError(f"empty user name in {url!r}; write host:path or user@host:path")
        if not path:
            raise ValueError(f"no path after the ':' in {url!r}; write host:path")
        user = scp.group("user")
        return Location(SSH, path, f"{user}@{host}" if user else host)
    # A relative local path is taken against the current directory now, as ShellApp inputs.
    return Location(LOCAL, os.path.abspath(url))


def _locate_scheme(scheme: str, url: str) -> Location:
    parts = urlsplit(url)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} must be file:///absolute/path (the host part "
                             f"{parts.netloc!r} is not allowed)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file URL {url!r} must hold an absolute path")
        return Location(LOCAL, os.path.normpath(path))
    if scheme not in ("http", "https", "rsync", "globus"):
        raise ValueError(f"unknown URL scheme {scheme!r} in {url!r}; {_ACCEPTED}")
    if not parts.hostname:
        raise ValueError(f"empty host in {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if scheme == "globus":
        try:
            endpoint = str(uuid.UUID(parts.netloc))
        except ValueError:
            raise ValueError(f"globus URL {url!r}: {parts.netloc!r} is not an endpoint UUID; "
                             "write globus://ENDPOINT_UUID/absolute/path") from None
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError(f"globus URL {url!r} needs an absolute path after the endpoint")
        return Location(GLOBUS, path, endpoint)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port is not None else "")
    if scheme == "rsync":
        if parts.path.strip("/") == "":
            raise ValueError(f"rsync URL {url!r} needs a module: rsync://host/module/path")
        return Location(RSYNC, parts.path, f"rsync://{netloc}")
    sha256 = None
    if parts.fragment:
        checksum = _SHA256_FRAGMENT.match(parts.fragment)
        if not checksum:
            raise ValueError(f"URL {url!r}: the fragment must be '#sha256=' and 64 hex "
                             f"digits, not {parts.fragment!r}")
        sha256 = checksum.group(1).lower()
    return Location(HTTP, url.split("#", 1)[0], f"{scheme}://{netloc}", sha256)


def _relative(field: str, value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: {what} must be a str, not {type(value).__name__} "
                        f"({value!r})")
    if not value:
        raise ValueError(f"{field}: {what} is empty; give a path relative to the task's "
                         "working directory")
    if "\0" in value:
        raise ValueError(f"{field}: {what} {value!r} contains a NUL byte")
    if value.startswith("/"):
        raise ValueError(f"{field}: {what} {value!r} must be relative to the task's working "
                         "directory, not absolute")
    if ".." in value.split("/"):
        raise ValueError(f"{field}: {what} {value!r} must stay inside the task's working "
                         "directory (no '..' component)")
    return value


def _pairs(field: str, value: Any, cls: type, names: str) -> Iterable[tuple[str, Any, Any]]:
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{field}: expected a list of ({names}) pairs, not "
                        f"{type(value).__name__} ({value!r})")
    for index, pair in enumerate(value):
        where = f"{field}[{index}]"
        if isinstance(pair, cls):
            yield where, *(getattr(pair, name) for name in names.split(", "))
        elif isinstance(pair, (list, tuple)) and len(pair) == 2:
            yield where, pair[0], pair[1]
        else:
            raise TypeError(f"{where}: expected a ({names}) pair, not {pair!r}")


def parse_stage_in(value: Any) -> tuple[StageIn, ...]:
    """Check ``stage_in`` (None, or a list of ``(url, dest)`` pairs or :class:`StageIn`)."""
    specs = []
    for where, url, dest in _pairs("stage_in", value, StageIn, "url, dest"):
        location = _checked(where, url)
        dest = _relative(where, dest, "dest")
        if location.kind == LOCAL and not url.startswith("file:"):
            url = location.path
        if dest.endswith("/") and not location.basename:
            raise ValueError(f"{where}: dest {dest!r} keeps the source's file name, but "
                             f"{url!r} has none; name the file in dest")
        if not dest.endswith("/") and posixpath.normpath(dest) == ".":
            raise ValueError(f"{where}: dest {dest!r} is the working directory itself; "
                             "write './' to keep the source's file name")
        specs.append(StageIn(url, dest))
    return tuple(specs)


def parse_stage_out(value: Any) -> tuple[StageOut, ...]:
    """Check ``stage_out`` (None, or a list of ``(pattern, url)`` pairs or :class:`StageOut`)."""
    specs = []
    for where, pattern, url in _pairs("stage_out", value, StageOut, "pattern, url"):
        pattern = _relative(where, pattern, "pattern")
        location = _checked(where, url)
        if location.kind == HTTP:
            raise ValueError(f"{where}: {url!r}: http(s) URLs are download-only; stage out to "
                             "a local path, file://, rsync://, host:path or globus://")
        if location.kind == LOCAL and not url.startswith("file:"):
            url = location.path + ("/" if url.endswith("/") else "")
        specs.append(StageOut(pattern, url))
    return tuple(specs)


def _checked(where: str, url: Any) -> Location:
    try:
        return locate(url)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def is_directory_url(spec: StageOut) -> bool:
    """Whether ``spec.url`` names a directory (trailing '/', or a glob pattern) or a file."""
    return spec.url.endswith("/") or bool(_GLOB_CHARS & set(spec.pattern))


def specs_to_json(stage_in: Iterable[StageIn], stage_out: Iterable[StageOut]) -> dict | None:
    """The specs as a JSON-ready dict for the store, or None when there are none."""
    doc = {"in": [[s.url, s.dest] for s in stage_in],
           "out": [[s.pattern, s.url] for s in stage_out]}
    return doc if doc["in"] or doc["out"] else None


def specs_from_json(doc: dict | None) -> tuple[tuple[StageIn, ...], tuple[StageOut, ...]]:
    """The inverse of :func:`specs_to_json` (checked again: the column may be old)."""
    if not doc:
        return (), ()
    if not isinstance(doc, dict):
        raise TypeError(f"staging specs: expected a dict with 'in' and 'out', not {doc!r}")
    return parse_stage_in(doc.get("in") or None), parse_stage_out(doc.get("out") or None)
