"""Command templates of shell apps: ``{param}`` fields, where each may stand, how values are
quoted, and the limits of execve(2) a command line must fit.  Checked when a ShellApp is made
and when a task is submitted (apps.py); nothing here runs a command.

Quoting: every parameter value goes through ``shlex.quote`` before it is put in the command,
as Balsam's ``_api/app.py`` does, so a value is always one literal argument.  That holds only
where a placeholder stands outside quotes, backticks, comments and here-documents;
``_scan_command`` rejects the template elsewhere (inside double quotes ``"$(...)"`` in a value
would still run), and tells whether the command needs ``/bin/sh -c``.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import struct
from collections.abc import Mapping
from pathlib import Path, PurePath
from string import Formatter
from typing import Any

#: Characters that make a template need a shell when they stand outside quotes.
_SHELL_CHARS = frozenset("|&;<>()$`*?[]~\n")
#: A first word that only a shell understands (keywords and builtins that change the shell).
_SHELL_WORDS = frozenset({
    "!", "{", "}", "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done",
    "case", "esac", "function", "export", "cd", "source", ".", "eval", "exec", "set", "unset",
    "ulimit", "umask", "trap", "alias",
})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
#: Stands for a value where ShellApp._arg_sizes splits a template.
_TOKEN = re.compile("\0[0-9]+\0")
#: Parameter value types: each has one obvious text form on a command line.
PARAM_TYPES = (str, int, float, PurePath)
#: The most bytes one argument or environment string may take in execve(2), its final NUL
#: included: Linux's MAX_ARG_STRLEN (32 pages, include/uapi/linux/binfmts.h), at 4 KiB pages,
#: the smallest.  Past it execve fails with E2BIG however much room ARG_MAX leaves.
MAX_ARG_STRLEN = 131072
#: What execve counts for each string besides its bytes: its pointer in argv or envp.
_POINTER = struct.calcsize("P")

# One parsed piece of a template: literal text, then a field (name, format spec, conversion)
# or None after the last literal.
_Part = tuple[str, "str | None", str, "str | None"]


def _refuse_nul(text: str, what: str) -> None:
    # A C string ends at its first NUL: no argument, path or variable can hold one.
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL character, which no command line, path or "
                         "environment variable can hold")


@functools.cache
def _arg_max() -> int:
    """The most bytes execve(2) takes for arguments and environment together, pointers
    included: sysconf ARG_MAX, a quarter of the stack limit on Linux (execve(2), "Limits on
    size of arguments and environment").  Asked here, at submit; the launcher's stack limit
    may differ."""
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = -1
    return limit if limit > 0 else MAX_ARG_STRLEN


def _parse_fields(template: str, what: str) -> tuple[_Part, ...]:
    """Split a ``{param}`` template, rejecting every field that is not a plain name."""
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{what} {template!r} is not a valid template: {exc} "
                         "(write {{ and }} for literal braces)") from None
    parts: list[_Part] = []
    for literal, name, spec, conv in parsed:
        if name is not None:
            if name == "" or name.isdigit():
                raise ValueError(f"{what} has the positional field {{{name}}}; name every "
                                 "field, e.g. {infile}")
            if not name.isidentifier():
                raise ValueError(f"{what} has the field {{{name}}}: fields are plain names, "
                                 "without attributes or indexes")
            if spec and "{" in spec:
                raise ValueError(f"{what} has a nested field in {{{name}:{spec}}}")
        parts.append((literal, name, spec or "", conv))
    return tuple(parts)


def _scan_command(parts: tuple[_Part, ...]) -> bool:
    """Check where each placeholder stands; return whether the command needs a shell.

    Shell syntax counts only outside quotes (``echo 'a|b'`` needs none); ``$`` and backticks
    count inside double quotes too.  A placeholder must stand in plain shell words.
    """
    single = double = backtick = comment = escaped = heredoc = False
    needs_shell = False
    prev = " "
    for literal, name, _spec, _conv in parts:
        for ch in literal:
            if comment:
                comment = ch != "\n"
            elif escaped:
                escaped = False
            elif single:
                single = ch != "'"
            elif double:
                if ch == "\\":
                    escaped = True
                elif ch == '"':
                    double = False
                elif ch in "$`":
                    needs_shell = True
                    backtick ^= ch == "`"
            elif ch == "\\":
                escaped = True
            elif ch == "'":
                single = True
            elif ch == '"':
                double = True
            elif ch == "#" and (prev.isspace() or prev in ";&|()<>"):
                comment = needs_shell = True
            else:
                if ch in _SHELL_CHARS:
                    needs_shell = True
                if ch == "`":
                    backtick = not backtick
                if ch == "<" and prev == "<":
                    heredoc = True
            prev = ch
        if name is None:
            continue
        where = ("inside single quotes" if single else "inside double quotes" if double
                 else "inside backticks" if backtick else "in a comment" if comment
                 else "after a backslash" if escaped else "after $" if prev == "$"
                 else "after a here-document (<<)" if heredoc else None)
        if where:
            raise ValueError(
                f"the placeholder {{{name}}} stands {where} in the command; put it in plain "
                "shell words: its value is quoted for the shell already")
        prev = "x"
    if single or double or backtick:
        raise ValueError("the command has an unterminated quote or backtick")
    if escaped:
        raise ValueError("the command ends with a lone backslash")
    words = shlex.split("".join(lit + ("x" if name is not None else "")
                                for lit, name, _s, _c in parts), comments=False)
    if not words:
        raise ValueError("the command is empty: it must name a program")
    return needs_shell or words[0] in _SHELL_WORDS or bool(_ASSIGNMENT.match(words[0]))


def _format_value(value: Any, spec: str, conv: str | None) -> str:
    if conv == "r":
        value = repr(value)
    elif conv == "a":
        value = ascii(value)
    elif conv == "s":
        value = str(value)
    return format(value, spec)


def _fill(parts: tuple[_Part, ...], values: Mapping[str, Any], quote: bool) -> str:
    out = []
    for literal, name, spec, conv in parts:
        out.append(literal)
        if name is not None:
            text = _format_value(values[name], spec, conv)
            if "\0" in text:
                raise ValueError(f"the value of parameter {name!r} contains a NUL character, "
                                 "which no command-line argument can hold")
            out.append(shlex.quote(text) if quote else text)
    return "".join(out)


def _absolute(path: str | os.PathLike[str], what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path, not {type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, str):
        _refuse_nul(text, what)
    return os.path.abspath(os.path.expanduser(text))


def _normalize_inputs(inputs: Any) -> tuple[tuple[str | None, str], ...]:
    """``inputs`` as ((name in the workdir or None, absolute source path or pattern), ...)."""
    if inputs is None:
        return ()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        pairs = []
        for dest, src in inputs.items():
            if not isinstance(dest, str) or not dest or os.path.isabs(dest) \
                    or ".." in PurePath(dest).parts:
                raise ValueError(f"inputs: {dest!r} must be a relative name inside the "
                                 "working directory")
            pairs.append((dest, _absolute(src, f"inputs[{dest!r}]")))
        return tuple(pairs)
    if isinstance(inputs, (list, tuple)):
        return tuple((None, _absolute(src, "each of inputs")) for src in inputs)
    raise TypeError("inputs must be a list of paths or glob patterns, or a mapping of names "
                    f"in the working directory to them, not {type(inputs).__name__}")


def _check_workdir(path: Path) -> None:
    _refuse_nul(str(path), "the working directory")
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"the working directory {str(path)!r} must be an absolute path "
                         "without '..'")
