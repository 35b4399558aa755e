"""Cache keys for ``cache=True``: a sha256 of everything that determines a task's result.

    call_key(fn, args, kwargs, version=)          shell_key(app, params, version=)
    ------------------------------------          -----------------------------------------
    _FORMAT, "call"                               _FORMAT, "shell"
    the callable: module, qualname, code digest,  command, env, inputs, parent_outputs,
      defaults, closure values, globals it reads  preprocess / postprocess (as callables)
    args, kwargs (kwargs sorted by name)          params, sorted by name (+ a Path's contents)
    version                                       contents of every input file, version
                 └───────────── sha256 ──> 64 hex characters (KEY_LENGTH) ─────────────┘

A key must be the same in another process and after a restart, whatever PYTHONHASHSEED is, and
must change when what determines the result changes.  So nothing here uses ``hash()``, ``id()``
(except to spot cycles), ``repr()`` of arbitrary objects or set iteration order.  Every value
is written as a tag, a length or terminator, and its parts, so no two different values write
the same bytes, and a value's bytes never depend on what follows it.

The callable: its code is hashed without ``co_filename``, line numbers or positions, so moving a
function down its file or editing a comment keeps its key, while editing its body changes it.
The code digest is cached per function (until ``__code__`` is replaced); defaults, closure
cells and the globals the code reads are encoded again on every call, since they can change.

Values: plain data is encoded directly; sets are sorted by their elements' encodings; dicts
keep their insertion order (``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` get different keys: a
callable can see the order, e.g. by iterating, so it is part of the value).  Keyword arguments
are sorted by name instead: ``f(a=1, b=2)`` is the same call as ``f(b=2, a=1)``.  Other
objects are pickled (protocol 5) with their sets, functions, classes and futures routed back
through this encoder.  Generators, iterators, coroutines, files, sockets, locks and threads
are refused with :class:`~balsam_futures.errors.CacheKeyError`, naming the argument.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from ._key_encoding import (  # noqa: F401 - KEY_LENGTH is part of this module's interface
    _FORMAT,
    KEY_LENGTH,
    _Encoder,
    _file_digest,
    _key_error,
    _Unhashable,
    _write_tree,
)
from .errors import CacheKeyError

if TYPE_CHECKING:
    from .apps import ShellApp


def call_key(fn: Callable[..., Any], args: tuple, kwargs: dict, *, version: Any = None,
             future_key: Callable[[Any], str] | None = None) -> str:
    """The cache key of ``fn(*args, **kwargs)``: 64 hex characters.

    ``version`` is the user's ``cache_version`` (None, ``""`` and ``0`` are three versions).
    ``future_key(fut)`` stands for a Future among the arguments (the key of the task behind
    it); without it, a Future raises CacheKeyError.  Raises CacheKeyError naming the argument
    (positional ones numbered from 1, as Python's own messages do) that cannot be hashed.
    """
    enc = _Encoder(future_key)
    out = enc.out
    out.append(_FORMAT + b"call\0")
    label = "the callable"
    try:
        enc.write_callable(fn)
        out.append(b"(%d:" % len(args))
        for i, arg in enumerate(args, 1):
            label = f"argument {i}"
            enc.write(arg)
        names = sorted(kwargs)
        out.append(b"{%d:" % len(names))
        for name in names:
            label = f"keyword argument {name!r}"
            enc._str(name)
            enc.write(kwargs[name])
        label = "version"
        enc.write(version)
    except _Unhashable as exc:
        raise _key_error(label, exc) from None
    return hashlib.sha256(b"".join(out)).hexdigest()


def shell_key(app: ShellApp, params: Mapping[str, Any], *, version: Any = None,
              future_key: Callable[[Any], str] | None = None) -> str:
    """The cache key of a shell task: 64 hex characters.

    Hashes the command template, ``env``, ``inputs`` and the contents of every file they name
    (directories recursively), ``preprocess``/``postprocess`` (as callables),
    ``parent_outputs``, each parameter (a ``pathlib`` path also by the contents of the file
    it names, when that is a file), and ``version``.  Not ``workdir``, ``link`` or ``name``:
    where the task runs and how its inputs get there do not change what it computes.
    Raises CacheKeyError for a parameter that cannot be hashed or an input that is missing.
    """
    from ._shell_run import _GLOB_CHARS  # the same test of a pattern as the run's

    enc = _Encoder(future_key)
    out = enc.out
    out.append(_FORMAT + b"shell\0")
    label = "the command"
    try:
        enc.write(app.command)
        label = "env"
        enc.write(tuple(sorted(app.env.items())))  # the environment has no order
        label = "inputs"
        enc.write(tuple(app.inputs))
        enc.write(tuple(app.parent_outputs))
        for label in ("preprocess", "postprocess"):
            hook = getattr(app, label)
            if hook is None:
                out.append(b"N")
            else:
                enc.write_callable(hook)
        names = sorted(params)
        out.append(b"{%d:" % len(names))
        for name in names:
            label = f"parameter {name!r}"
            value = params[name]
            enc._str(name)
            enc.write(value)
            if isinstance(value, PurePath):
                out.append(_param_file(name, value))
        label = "version"
        enc.write(version)
    except _Unhashable as exc:
        raise _key_error(label, exc) from None
    for _dest, pattern in app.inputs:
        if _GLOB_CHARS.search(pattern):
            matches = sorted(glob.glob(pattern))
        else:
            matches = [pattern] if os.path.lexists(pattern) else []
        if not matches:
            raise CacheKeyError(f"cache=True: input {pattern!r} of the shell app was not found "
                                "(no such file, or no file matches the pattern), so its "
                                "contents cannot be hashed; the run would fail too")
        out.append(b"I%d:" % len(matches))
        for src in matches:
            enc._str(os.path.basename(src))
            _write_input(out, src)
    return hashlib.sha256(b"".join(out)).hexdigest()


def _param_file(name: str, value: PurePath) -> bytes:
    path = Path(value)
    try:
        if not path.is_file():
            return b"-"
        return b"h" + _file_digest(path)
    except OSError as exc:
        raise CacheKeyError(f"cache=True: parameter {name!r} names the file {str(path)!r}, "
                            f"which cannot be read to hash its contents: {exc}") from None


def _write_input(out: list[bytes], src: str) -> None:
    try:
        if os.path.isdir(src):
            out.append(b"d")
            _write_tree(out, src)
        elif os.path.isfile(src):
            out.append(b"f" + _file_digest(src))
        else:
            raise CacheKeyError(f"cache=True: input {src!r} of the shell app is a broken "
                                "symbolic link or not a regular file, so its contents cannot "
                                "be hashed")
    except OSError as exc:
        raise CacheKeyError(f"cache=True: input {src!r} of the shell app cannot be read to "
                            f"hash its contents: {exc}") from None


def with_staging(key: str, stage_in: tuple, stage_out: tuple) -> str:
    """``key`` extended by a task's ``stage_in`` and ``stage_out``: the files fetched
    determine the result (their URLs, with any ``#sha256=``, stand for them: a remote file's
    contents cannot be read at submit), and a hit ships nothing, so another destination is
    another call."""
    if not (stage_in or stage_out):
        return key
    import json

    from .staging import specs_to_json

    staging = json.dumps(specs_to_json(stage_in, stage_out), sort_keys=True)
    return hashlib.sha256(f"{key}\0{staging}".encode()).hexdigest()
