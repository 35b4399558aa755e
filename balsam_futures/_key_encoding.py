"""The stable encoding behind cache keys (cache_key.py): values, callables and files as
bytes that are the same in every process and change when what they stand for changes.

See cache_key.py for the rules; this module is the machinery: ``_Encoder`` writes a value as
a tag, a length or terminator, and its parts; ``_StablePickler`` routes what pickle would
write unstably (sets, functions, classes, futures) back through it.
"""

from __future__ import annotations

import _thread
import dataclasses
import datetime
import enum
import functools
import hashlib
import io
import os
import pickle
import sys
import threading
import types
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import PurePath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from .errors import CacheKeyError

if TYPE_CHECKING:
    pass

KEY_LENGTH = 64  # hex sha256
#: Hashed first: change it when the encoding changes, so that no old key matches a new one.
_FORMAT = b"balsam_futures.cache_key/1\0"
#: Read size when hashing input files: larger costs memory per key, smaller costs system calls.
_BLOCK = 1 << 20
#: A function's (code object, code digest, global names its code reads), until its
#: ``__code__`` is replaced.
_CODE_INFO: weakref.WeakKeyDictionary[types.FunctionType, tuple[Any, bytes, tuple[str, ...]]] \
    = weakref.WeakKeyDictionary()
_BUILTIN_TYPES = (types.BuiltinFunctionType, types.WrapperDescriptorType,
                  types.MethodWrapperType, types.MethodDescriptorType,
                  types.ClassMethodDescriptorType)
#: Class attributes left out of a ``__main__`` class's digest (they are not its code).
_SKIP_CLASS_ATTRS = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__",
                               "__dataclass_fields__", "__dataclass_params__",
                               "__match_args__", "__slots__", "__annotations__"})
_PLAIN_CONSTANTS = (type(None), bool, int, float, complex, str, bytes)
_MISSING = object()


class _Unhashable(Exception):
    """Internal: ``obj`` cannot be encoded stably.  ``steps`` says where it sits, innermost
    first; the public entry points turn it into a CacheKeyError naming the argument."""

    def __init__(self, obj: Any, reason: str, what: str | None = None) -> None:
        super().__init__(reason)
        self.obj = obj
        self.reason = reason
        self.what = what or _a(type(obj).__name__)
        self.steps: list[str] = []


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _key_error(label: str, exc: _Unhashable) -> CacheKeyError:
    steps = "".join(reversed(exc.steps))
    where = label + (" at " + steps if steps[:1] in ("[", ".") else steps)
    return CacheKeyError(f"cache=True: {where} ({exc.what}) cannot be hashed stably: "
                         f"{exc.reason}; pass plain data, or submit without cache")


def _refusal(obj: Any) -> tuple[str, str] | None:
    """(what, why) when ``obj`` is a resource or a lazy producer rather than a value."""
    if isinstance(obj, (types.GeneratorType, types.AsyncGeneratorType)):
        return _a(type(obj).__name__), "its values are produced lazily, and hashing them " \
            "would use them up"
    if isinstance(obj, types.CoroutineType):
        return "a coroutine", "it has no value until it is awaited"
    if isinstance(obj, io.IOBase):
        return f"an open file or stream ({type(obj).__name__})", "what it reads or writes " \
            "is not its value (pass its path, or its contents)"
    sock = sys.modules.get("socket")
    if sock is not None and isinstance(obj, sock.socket):
        return "a socket", "it is a connection of this process, not data"
    if isinstance(obj, (_thread.LockType, _thread.RLock)):
        return "a lock", "it is a resource of this process, not data"
    if isinstance(obj, (threading.Condition, threading.Semaphore, threading.Event,
                        threading.Barrier)):
        return f"a threading.{type(obj).__name__}", "it is a resource of this process, not data"
    if isinstance(obj, threading.Thread):
        return "a thread", "it is a resource of this process, not data"
    if hasattr(type(obj), "__next__"):
        return f"an iterator ({type(obj).__name__})", "its values are produced lazily, and " \
            "hashing them would use them up"
    return None


def _global_names(code: types.CodeType) -> list[str]:
    """The names the code and its nested code objects look up (globals among them)."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return names


def _code_digest(code: types.CodeType) -> bytes:
    """sha256 of what a code object does, without its file name, line numbers or positions."""
    enc = _Encoder()
    out = enc.out
    out.append(b"K%d,%d,%d,%d,%d;" % (code.co_argcount, code.co_posonlyargcount,
                                       code.co_kwonlyargcount, code.co_flags,
                                       code.co_nlocals))
    enc.write(code.co_name)
    enc.write(code.co_code)
    # 3.11+: which instructions a try block covers; offsets only, no line numbers.
    enc.write(getattr(code, "co_exceptiontable", b""))
    enc.write(code.co_names)
    enc.write(code.co_varnames)
    enc.write(code.co_freevars)
    enc.write(code.co_cellvars)
    enc.write(code.co_consts)  # nested code objects: their own digest (see _Encoder._code)
    return hashlib.sha256(b"".join(out)).digest()


def _code_info(fn: types.FunctionType) -> tuple[bytes, tuple[str, ...]]:
    code = fn.__code__
    entry = _CODE_INFO.get(fn)
    if entry is not None and entry[0] is code:
        return entry[1], entry[2]
    digest = _code_digest(code)
    names = tuple(dict.fromkeys(_global_names(code)))
    _CODE_INFO[fn] = (code, digest, names)
    return digest, names


def _class_needs_digest(cls: type) -> bool:
    # A class that cannot be imported by name elsewhere: its name does not pin its code.
    module = getattr(cls, "__module__", None)
    return module == "__main__" or "<locals>" in getattr(cls, "__qualname__", "") \
        or module not in sys.modules


def _file_digest(path: str | os.PathLike[str]) -> bytes:
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


def _write_tree(out: list[bytes], path: str) -> None:
    """A directory's entries, sorted by name: each name, kind and contents, recursively.
    Symbolic links inside it are copied as links (shutil.copytree(symlinks=True)), so a link
    is its target text, plus the target's contents when that is a file."""
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    out.append(b"%d:" % len(entries))
    for entry in entries:
        name = os.fsencode(entry.name)
        out += [b"%d:" % len(name), name]
        if entry.is_symlink():
            target = os.fsencode(os.readlink(entry.path))
            out += [b"l%d:" % len(target), target]
            out.append(b"f" + _file_digest(entry.path) if os.path.isfile(entry.path) else b"-")
        elif entry.is_dir():
            out.append(b"d")
            _write_tree(out, entry.path)
        elif entry.is_file():
            out.append(b"f" + _file_digest(entry.path))
        else:
            out.append(b"o")  # a FIFO or socket: copied as what it is


class _StablePickler(pickle.Pickler):
    """Pickles an object, sending what pickle would write in an unstable order (sets) or by
    name only (functions, classes) back through the encoder as persistent ids."""

    def __init__(self, file: io.BytesIO, encoder: _Encoder) -> None:
        super().__init__(file, protocol=5)
        self._encoder = encoder

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t in _PICKLE_PLAIN:
            return None
        if t in _ROUTED or isinstance(obj, (set, frozenset, type, Future, functools.partial)) \
                or _refusal(obj) is not None:
            return hashlib.sha256(self._encoder.encode(obj)).digest()
        return None


class _Encoder:
    """Writes values as unambiguous bytes into ``out`` (see the module docstring)."""

    __slots__ = ("out", "future_key", "_active")

    def __init__(self, future_key: Callable[[Any], str] | None = None) -> None:
        self.out: list[bytes] = []
        self.future_key = future_key
        # id -> position of containers, functions and classes being written: a cycle is
        # written as a back reference to that position, which is the same in every process.
        self._active: dict[int, int] = {}

    def write(self, obj: Any) -> None:
        method = _DISPATCH.get(type(obj))
        if method is None:
            self._other(obj)
        else:
            method(self, obj)

    def encode(self, obj: Any) -> bytes:
        """``obj``'s bytes on their own (a set's elements are sorted by these)."""
        saved, self.out = self.out, []
        try:
            self.write(obj)
            return b"".join(self.out)
        finally:
            self.out = saved

    def _enter(self, obj: Any) -> bool:
        key = id(obj)
        if key in self._active:
            self.out.append(b"@%d;" % self._active[key])
            return False
        self._active[key] = len(self._active)
        return True

    def _leave(self, obj: Any) -> None:
        del self._active[id(obj)]

    # -- plain data --------------------------------------------------------------------------

    def _none(self, obj: None) -> None:
        self.out.append(b"N")

    def _ellipsis(self, obj: Any) -> None:
        self.out.append(b"E")

    def _bool(self, obj: bool) -> None:
        self.out.append(b"T" if obj else b"F")

    def _int(self, obj: int) -> None:
        self.out.append(b"i%d;" % obj)

    def _float(self, obj: float) -> None:
        # float.hex is exact and keeps -0.0 apart from 0.0.
        self.out.append(b"f" + obj.hex().encode() + b";")

    def _complex(self, obj: complex) -> None:
        self.out.append(b"c" + obj.real.hex().encode() + b"," + obj.imag.hex().encode() + b";")

    def _str(self, obj: str) -> None:
        data = obj.encode("utf-8", "surrogatepass")
        self.out += [b"s%d:" % len(data), data]

    def _bytes(self, obj: bytes) -> None:
        self.out += [b"b%d:" % len(obj), obj]

    def _bytearray(self, obj: bytearray) -> None:
        self.out += [b"y%d:" % len(obj), bytes(obj)]

    def _memoryview(self, obj: memoryview) -> None:
        data = obj.tobytes()
        self.out.append(b"v")
        self.write((obj.format, obj.shape))
        self.out += [b"%d:" % len(data), data]

    def _tuple(self, obj: tuple) -> None:
        self.out.append(b"(%d:" % len(obj))
        for i, item in enumerate(obj):
            self._write_at(item, f"[{i}]")

    def _write_at(self, value: Any, step: str) -> None:
        """``write(value)``, naming ``step`` (where it sits in its container) in the error
        if it cannot be hashed."""
        try:
            self.write(value)
        except _Unhashable as exc:
            exc.steps.append(step)
            raise

    def _list(self, obj: list) -> None:
        if not self._enter(obj):
            return
        try:
            self.out.append(b"[%d:" % len(obj))
            for i, item in enumerate(obj):
                self._write_at(item, f"[{i}]")
        finally:
            self._leave(obj)

    def _dict(self, obj: dict) -> None:
        if not self._enter(obj):
            return
        try:
            self.out.append(b"{%d:" % len(obj))
            for key, value in obj.items():
                try:
                    self.write(key)
                    self.write(value)
                except _Unhashable as exc:
                    exc.steps.append(f"[{_short_repr(key)}]")
                    raise
        finally:
            self._leave(obj)

    def _set(self, obj: set | frozenset, tag: bytes = b"S") -> None:
        if not self._enter(obj):
            return
        try:
            try:
                items = sorted(self.encode(item) for item in obj)
            except _Unhashable as exc:
                exc.steps.append(" -> an element of a set")
                raise
            self.out.append(tag + b"%d:" % len(items))
            self.out += items
        finally:
            self._leave(obj)

    def _frozenset(self, obj: frozenset) -> None:
        self._set(obj, b"Z")

    def _datetime(self, obj: datetime.datetime) -> None:
        self.out.append(b"d%d" % obj.fold)
        self._str(obj.isoformat())
        self.write(obj.tzinfo)  # ZoneInfo pickles by its key, timezone by offset and name

    def _date(self, obj: datetime.date) -> None:
        self.out.append(b"D")
        self._str(obj.isoformat())

    def _time(self, obj: datetime.time) -> None:
        self.out.append(b"t%d" % obj.fold)
        self._str(obj.isoformat())
        self.write(obj.tzinfo)

    def _timedelta(self, obj: datetime.timedelta) -> None:
        self.out.append(b"e%d,%d,%d;" % (obj.days, obj.seconds, obj.microseconds))

    def _module(self, obj: types.ModuleType) -> None:
        self.out.append(b"M")
        self._str(obj.__name__)

    def _code(self, obj: types.CodeType) -> None:
        self.out.append(b"k" + _code_digest(obj))

    # -- callables ---------------------------------------------------------------------------

    def write_callable(self, fn: Any) -> None:
        """``fn`` as a task's callable: a callable instance adds its ``__call__``'s code."""
        t = type(fn)
        if t in _DISPATCH or isinstance(fn, (type, functools.partial)):
            self.write(fn)
            return
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None and callable(wrapped):  # e.g. functools.lru_cache's wrapper
            self.out.append(b"W")
            self._class(t)
            self.write_callable(wrapped)
            return
        self.out.append(b"O")
        call = getattr(t, "__call__", None)  # noqa: B004 (its code is wanted, not a test)
        if isinstance(call, types.FunctionType):
            self._function(call)
        else:
            self.out.append(b"N")
        self.write(fn)

    def _function(self, fn: types.FunctionType) -> None:
        qualname = fn.__qualname__
        if not self._enter(fn):  # recursion (f reads itself, or g reads f and f reads g)
            return
        try:
            self.out.append(b"F")
            self.write(fn.__module__)
            self._str(qualname)
            digest, names = _code_info(fn)
            self.out.append(digest)
            try:
                self.write(fn.__defaults__)
                self.write(fn.__kwdefaults__)
            except _Unhashable as exc:
                exc.steps.append(f" -> the defaults of {qualname}")
                raise
            cells = fn.__closure__ or ()
            self.out.append(b"%d:" % len(cells))
            for name, cell in zip(fn.__code__.co_freevars, cells):
                try:
                    value = cell.cell_contents
                except ValueError:  # not assigned yet
                    self.out.append(b"-")
                    continue
                try:
                    self._str(name)
                    self.write(value)
                except _Unhashable as exc:
                    exc.steps.append(f" -> the closure variable {name!r} of {qualname}")
                    raise
            found = self.out.append
            g = fn.__globals__
            for name in names:
                value = g.get(name, _MISSING)
                if value is _MISSING:
                    continue  # a builtin, an attribute name, or not defined yet
                self._str(name)
                if _refusal(value) is not None and not isinstance(value, Future):
                    # A module-level lock or file is the code's machinery, not its input.
                    found(b"x")
                    self._class(type(value))
                    continue
                self._write_at(value, f" -> the global {name!r} read by {qualname}")
            found(b";")
        finally:
            self._leave(fn)

    def _method(self, obj: types.MethodType) -> None:
        self.out.append(b"m")
        self.write(obj.__func__)
        self._write_at(obj.__self__, f" -> the object of the bound method {obj.__qualname__}")

    def _builtin(self, obj: Any) -> None:
        module = getattr(obj, "__module__", None) \
            or getattr(getattr(obj, "__objclass__", None), "__module__", None)
        self.out.append(b"B")
        self.write(module)
        self.write(getattr(obj, "__qualname__", getattr(obj, "__name__", None)))
        owner = getattr(obj, "__self__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            self.out.append(b"N")
        else:  # a method of a builtin object: "abc".upper, [].append
            self._write_at(owner, f" -> the object of {obj.__qualname__}")

    def _partial(self, obj: functools.partial) -> None:
        self.out.append(b"P")
        self._class(type(obj))
        self.write_callable(obj.func)
        try:
            self.write(obj.args)
            self.write(obj.keywords)
        except _Unhashable as exc:
            exc.steps.append(" -> the arguments bound by functools.partial")
            raise

    def _class(self, cls: type) -> None:
        self.out.append(b"C")
        self.write(getattr(cls, "__module__", None))
        self.write(getattr(cls, "__qualname__", None))
        if not _class_needs_digest(cls):
            self.out.append(b";")
            return
        if not self._enter(cls):
            return
        try:
            # Its methods' code, not their globals: a class is an argument's type here, and
            # its code is what a new definition changes.
            self.out.append(b"+")
            self.write(cls.__bases__)
            for name, value in vars(cls).items():
                if name in _SKIP_CLASS_ATTRS:
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    value = (value.fget, value.fset, value.fdel)
                    codes = [_code_info(f)[0] if isinstance(f, types.FunctionType) else b"-"
                             for f in value]
                    self._str(name)
                    self.out.append(b"p" + b"".join(codes))
                elif isinstance(value, types.FunctionType):
                    self._str(name)
                    self.out.append(b"k" + _code_info(value)[0])
                elif isinstance(value, type):
                    self._str(name)
                    self._class(value)
                elif type(value) in _PLAIN_CONSTANTS:
                    self._str(name)
                    self.write(value)
            self.out.append(b";")
        finally:
            self._leave(cls)

    # -- everything else ---------------------------------------------------------------------

    def _other(self, obj: Any) -> None:
        out = self.out
        if isinstance(obj, type):
            self._class(obj)
            return
        if isinstance(obj, enum.Enum):
            out.append(b"n")
            self._class(type(obj))
            self.write(obj._name_)
            self.write(obj._value_)
            return
        np = sys.modules.get("numpy")
        # An ndarray subclass (masked, matrix) is pickled: its extra state is not in its bytes.
        if np is not None and (type(obj) is np.ndarray or isinstance(obj, np.generic)):
            self._numpy(obj, np)
            return
        if isinstance(obj, (set, frozenset)):
            out.append(b"s")
            self._class(type(obj))
            self._set(obj, b"Z" if isinstance(obj, frozenset) else b"S")
            return
        if isinstance(obj, functools.partial):
            self._partial(obj)
            return
        if dataclasses.is_dataclass(obj):
            self._dataclass(obj)
            return
        if isinstance(obj, PurePath):
            out.append(b"w" if isinstance(obj, PureWindowsPath) else b"u")
            self._str(str(obj))
            return
        decimal = sys.modules.get("decimal")
        if decimal is not None and isinstance(obj, decimal.Decimal):
            out.append(b"$")
            self._str(str(obj))  # keeps the exponent: Decimal("1.0") is not Decimal("1.00")
            return
        fractions = sys.modules.get("fractions")
        if fractions is not None and isinstance(obj, fractions.Fraction):
            out.append(b"/%d,%d;" % (obj.numerator, obj.denominator))
            return
        if isinstance(obj, Future):
            self._future(obj)
            return
        refused = _refusal(obj)
        if refused is not None:
            raise _Unhashable(obj, refused[1], refused[0])
        self._pickled(obj)

    def _future(self, obj: Future) -> None:
        if self.future_key is None:
            raise _Unhashable(obj, "it is the result of another task, and no future_key was "
                              "given to stand for it by that task's own key", "a Future")
        key = self.future_key(obj)  # may raise CacheKeyError itself
        self.out.append(b"<")
        self._str(key)

    def _numpy(self, obj: Any, np: Any) -> None:
        self.out.append(b"A" if isinstance(obj, np.ndarray) else b"a")
        self.write(obj.dtype.descr)  # byte order, fields and units included
        self.write(obj.shape)
        if obj.dtype.hasobject:
            self.write(obj.tolist())  # the bytes would be pointers
        else:
            self._bytes(np.ascontiguousarray(obj).tobytes() if isinstance(obj, np.ndarray)
                        else obj.tobytes())

    def _dataclass(self, obj: Any) -> None:
        if not self._enter(obj):
            return
        try:
            fields = dataclasses.fields(obj)
            self.out.append(b"q")
            self._class(type(obj))
            self.out.append(b"%d:" % len(fields))
            for f in fields:
                self._str(f.name)
                self._write_at(getattr(obj, f.name, None), f".{f.name}")
        finally:
            self._leave(obj)

    def _pickled(self, obj: Any) -> None:
        if not self._enter(obj):
            return
        buf = io.BytesIO()
        try:
            _StablePickler(buf, self).dump(obj)
        except _Unhashable as exc:
            exc.steps.append(f" -> inside {_a(type(obj).__name__)}")
            raise
        except CacheKeyError:
            raise
        except RecursionError:
            raise _Unhashable(obj, "it is nested too deeply") from None
        except Exception as exc:
            raise _Unhashable(obj, f"it cannot be pickled ({type(exc).__name__}: {exc})") \
                from None
        finally:
            self._leave(obj)
        data = buf.getvalue()
        self.out += [b"o%d:" % len(data), data]


def _short_repr(key: Any) -> str:
    if type(key) in _PLAIN_CONSTANTS:
        text = repr(key)
        return text if len(text) <= 40 else text[:37] + "..."
    return "<" + type(key).__name__ + ">"


_DISPATCH: dict[type, Callable[[_Encoder, Any], None]] = {
    type(None): _Encoder._none,
    type(Ellipsis): _Encoder._ellipsis,
    bool: _Encoder._bool,
    int: _Encoder._int,
    float: _Encoder._float,
    complex: _Encoder._complex,
    str: _Encoder._str,
    bytes: _Encoder._bytes,
    bytearray: _Encoder._bytearray,
    memoryview: _Encoder._memoryview,
    tuple: _Encoder._tuple,
    list: _Encoder._list,
    dict: _Encoder._dict,
    set: _Encoder._set,
    frozenset: _Encoder._frozenset,
    datetime.datetime: _Encoder._datetime,
    datetime.date: _Encoder._date,
    datetime.time: _Encoder._time,
    datetime.timedelta: _Encoder._timedelta,
    types.ModuleType: _Encoder._module,
    types.CodeType: _Encoder._code,
    types.FunctionType: _Encoder._function,
    types.MethodType: _Encoder._method,
    functools.partial: _Encoder._partial,
    type: _Encoder._class,
    **{t: _Encoder._builtin for t in _BUILTIN_TYPES},
}
#: Types pickle writes in a stable order by itself.
_PICKLE_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray,
                           tuple, list, dict})
#: Types the pickler hands back to the encoder (see _StablePickler.persistent_id).
_ROUTED = frozenset({types.FunctionType, types.MethodType, types.ModuleType, types.CodeType,
                     functools.partial, set, frozenset, type})
