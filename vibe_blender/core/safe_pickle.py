"""A restricted pickle reader for files a user may have downloaded (``SMPL_NEUTRAL.pkl``,
``vibe_output.pkl``): nothing in the file can run code, crash the process or exhaust memory.

Pickles of numpy arrays normally let the file hand arbitrary state to ``numpy.dtype.__setstate__``
and ``ndarray.__setstate__``; a crafted dtype (an object field overlapping a number, flags that hide
it) then crashes Python. Here no file-controlled state ever reaches numpy:

- ``find_class`` answers from an allow-list; every numpy name maps to a stand-in defined below
  (:class:`DtypeSpec`, the array builders), never to numpy itself;
- a dtype is a plain kind from :data:`bounded_arrays.NUMERIC_KINDS`; of its pickled state only the
  byte order is used, and records, sub-arrays and metadata are refused;
- arrays are built with ``np.frombuffer`` from bytes whose length must equal shape × itemsize;
- what the stand-ins build (arrays, ``_codecs.encode`` bytes, sets) is charged to a
  :class:`bounded_arrays.ByteBudget` of the stream's length (of a compressed file, the one budget of
  the file on disk, which its decompression was charged to first): one memoized value reused (BINGET)
  by many builds is a full copy each time, so a 1 MiB file cannot grow to hundreds of MiB;
- BUILD (``__setstate__``) and NEWOBJ apply only to the stand-ins; REDUCE calls only allow-listed
  functions; dict keys and set items must be plain scalars (hashing a nested tuple costs time
  exponential in its depth);
- at most :data:`MAX_OPCODES` opcodes are run, integers stay under :data:`MAX_INT_BITS` bits, and the
  loaded value, walked as a tree, has at most :data:`MAX_NODES` nodes and :data:`MAX_DEPTH` levels,
  so shared references ("billion laughs") or cycles cannot expand in later code.

Readers subclass :class:`RestrictedUnpickler`, add their globals and stand-ins, and turn any
exception into one ``VibeError`` naming the file.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import ClassVar

import numpy as np

from .bounded_arrays import NUMERIC_KINDS, ByteBudget, UntrustedDataError, array_from_bytes, plain_dtype
from .errors import failure_words
from .shown_text import shown_value

MAX_OPCODES = 1_000_000
MAX_NODES = 1_000_000
MAX_DEPTH = 64
MAX_INT_BITS = 128
SET_ITEM_BYTES = 64  # what one item of a built set costs (its slot, its share of the list copied into it)


class PickleRefused(pickle.UnpicklingError):
    """The pickle asks for something this reader does not allow."""


class StandIn:
    """Base of the objects the restricted reader builds in place of foreign classes.

    ``state`` holds the BUILD state (a dict of str keys); :meth:`finish` returns what the object
    becomes once built (itself, or e.g. the array it describes).
    """

    def __init__(self):
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise PickleRefused(f"{type(self).__name__}: expected a dict of named fields as state")
        self.state.update(state)

    def finish(self, unpickler: RestrictedUnpickler):
        return self


class _Marker:
    """A name from the file that is only ever data (numpy.ndarray, object), never called."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


NDARRAY = _Marker("numpy.ndarray")
OBJECT = _Marker("object")


def _text(value) -> str:
    """Python-2 pickles read with latin1 give str; bytes may appear too."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _raw_bytes(value, budget: ByteBudget | None) -> bytes | bytearray:
    if isinstance(value, str):  # Python 2 str read with encoding="latin1": a copy, charged
        if budget is not None:
            budget.take(len(value), "the array data")
        return value.encode("latin1")
    if isinstance(value, (bytes, bytearray)):
        return value
    raise PickleRefused(f"array data is a {type(value).__name__}, not bytes")


def build_array(raw, dtype: np.dtype, shape, budget: ByteBudget | None, *, fortran_order: bool = False) -> np.ndarray:
    """:func:`bounded_arrays.array_from_bytes` with the bytes it copies charged to ``budget`` first (None:
    not charged; torch's weights-only loader calls :func:`_scalar`, one number, without a budget)."""
    data = _raw_bytes(raw, budget)
    if budget is not None:
        budget.take(len(data), "an array")
    return array_from_bytes(data, dtype, shape, fortran_order=fortran_order)


class DtypeSpec(StandIn):
    """``numpy.dtype(kind, align, copy)`` from the file. Only the kind (allow-listed) and, from the
    state, the byte order are used; :meth:`numpy` makes the real dtype."""

    allow_text: ClassVar[bool] = False  # fixed-width text too: a reader of files that hold names sets it

    def __init__(self, kind=None, align=False, copy=True):
        super().__init__()
        kind = _text(kind)
        if not isinstance(kind, str) or not (kind in NUMERIC_KINDS or self.allow_text):
            raise PickleRefused(
                f"refusing dtype {shown_value(kind, 40)}: only plain bool/int/float arrays are accepted"
            )
        try:
            self.dtype = plain_dtype(kind, allow_text=self.allow_text)
        except UntrustedDataError as err:
            raise PickleRefused(str(err)) from None

    def __setstate__(self, state) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise PickleRefused(f"dtype state {shown_value(state, 80)} is not the state of a plain numeric dtype")
        order, subarray, names, fields = (_text(s) for s in state[1:5])
        if (
            subarray is not None
            or names is not None
            or fields is not None
            or (len(state) == 9 and state[8] is not None)
        ):
            raise PickleRefused("refusing a structured, sub-array or annotated dtype: only plain numbers are accepted")
        if order not in ("<", ">", "|", "="):
            raise PickleRefused(f"dtype byte order {shown_value(order, 20)} is not one of < > | =")
        self.dtype = self.dtype.newbyteorder("=" if order == "|" else order)

    def numpy(self) -> np.dtype:
        return self.dtype


def dtype_of(value) -> np.dtype:
    """The numpy dtype a :class:`DtypeSpec` from the file stands for; anything else is refused."""
    if not isinstance(value, DtypeSpec):
        raise PickleRefused(f"expected a numpy dtype, got a {type(value).__name__}")
    return value.numpy()


class PendingArray(StandIn):
    """``_reconstruct(ndarray, (0,), b'b')``: becomes an array when BUILD gives it
    ``(version, shape, dtype, is_fortran, raw bytes)`` (or the 4-tuple without version)."""

    def __init__(self, cls=None, shape=None, typecode=None):
        super().__init__()
        if cls is not NDARRAY:
            raise PickleRefused(
                f"refusing to reconstruct a {shown_value(cls, 40)}: only plain numpy arrays are accepted"
            )
        self.array = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise PickleRefused("array state is not (version, shape, dtype, is_fortran, data)")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(fortran, (bool, int)):
            raise PickleRefused("array state has no Fortran-order flag")
        self.array = (raw, dtype_of(dtype), shape, bool(fortran))

    def finish(self, unpickler):
        if self.array is None:
            raise PickleRefused("an array was given no data")
        raw, dtype, shape, fortran = self.array
        return build_array(raw, dtype, shape, unpickler.budget, fortran_order=fortran)


# The functions below are called by REDUCE with the file's arguments; the reader passes its byte budget
# as the keyword ``budget`` (a file cannot: REDUCE has no keywords). torch's weights-only loader calls
# _scalar directly, without one.


def _frombuffer(buffer, dtype, shape, order="C", *, budget: ByteBudget | None = None):
    """numpy's protocol-5 array: ``_frombuffer(bytearray, dtype, shape, order)``."""
    return build_array(buffer, dtype_of(dtype), shape, budget, fortran_order=_text(order) == "F")


def _scalar(dtype, raw=None, *, budget: ByteBudget | None = None):
    """numpy's ``scalar(dtype, bytes)``: one number of a plain dtype."""
    return build_array(raw, dtype_of(dtype), (1,), budget)[0]


def _encode(text, encoding="latin1", *, budget: ByteBudget | None = None):
    """``_codecs.encode(str, 'latin1')``: how Python 3 protocol-2 pickles store bytes."""
    if not isinstance(text, str) or _text(encoding).lower().replace("_", "-") not in (
        "latin1",
        "latin-1",
        "iso-8859-1",
    ):
        raise PickleRefused("refusing _codecs.encode other than text to latin-1 bytes")
    if budget is not None:
        budget.take(len(text), "_codecs.encode")
    return text.encode("latin1")


def _empty_bytes():
    """``bytes()``: how protocol-2 pickles store empty bytes (an empty array's data)."""
    return b""


def _scalar_items(items, budget: ByteBudget | None):
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise PickleRefused("a set may hold only plain numbers and strings")
    if budget is not None:
        budget.take(SET_ITEM_BYTES * len(items), "a set")
    items = list(items)
    if not all(_is_plain_key(x) for x in items):
        raise PickleRefused("a set may hold only plain numbers and strings")
    return items


def _set(items=(), *, budget: ByteBudget | None = None):
    return set(_scalar_items(items, budget))


def _frozenset(items=(), *, budget: ByteBudget | None = None):
    return frozenset(_scalar_items(items, budget))


def _is_plain_key(key) -> bool:
    """Hashing these is cheap: str/bytes hashes are cached, ints are bounded, stand-ins hash by identity."""
    if type(key) is int:
        return key.bit_length() <= 64
    return type(key) in (str, bytes, float, bool, type(None)) or isinstance(key, StandIn)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor(cls, object, None)``, as Python-2 pickles create objects: stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, StandIn)) or base is not OBJECT or state is not None:
        raise PickleRefused(f"refusing copyreg._reconstructor({shown_value(cls, 40)}, {shown_value(base, 40)}, ...)")
    return cls()


_NUMPY = {"_reconstruct": PendingArray, "scalar": _scalar, "_frombuffer": _frombuffer}
_CHARGED = (_frombuffer, _scalar, _encode, _set, _frozenset)  # called with budget=

BASE_GLOBALS = {
    **{
        (mod, name): func
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name, func in _NUMPY.items()
        if name != "_frombuffer"
    },
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): DtypeSpec,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): OBJECT,
    ("builtins", "object"): OBJECT,
    ("__builtin__", "set"): _set,
    ("builtins", "set"): _set,
    ("__builtin__", "frozenset"): _frozenset,
    ("builtins", "frozenset"): _frozenset,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}

_PLAIN_VALUES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray, np.generic)


class ReadsWithin:
    """A seekable binary stream whose reads never ask for more than it holds: a length in the pickle
    (BINBYTES8, FRAME...) is the file's own claim, and a buffered file reserves what it is asked for."""

    def __init__(self, file):
        self._file = file
        here = file.tell()
        self.size = file.seek(0, io.SEEK_END) - here
        file.seek(here)
        self._end = here + self.size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._file.read()
        return self._file.read(min(n, max(self._end - self._file.tell(), 0)))

    def readline(self, limit: int = -1) -> bytes:
        return self._file.readline(limit)

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: every opcode is overridable
    """Loads plain containers, numbers, strings and numpy arrays of plain dtypes; nothing else.

    Subclasses extend :attr:`GLOBALS` ((module, name) -> stand-in class or function),
    :attr:`MODULE_PREFIXES` (module prefix -> stand-in class, for families such as chumpy) and
    :attr:`OUTPUT_TYPES` (stand-ins allowed in the loaded value).
    """

    GLOBALS: ClassVar[dict] = BASE_GLOBALS
    MODULE_PREFIXES: ClassVar[dict] = {}
    OUTPUT_TYPES: ClassVar[tuple] = ()
    what = "this file"

    def __init__(self, file, budget: ByteBudget | None = None):
        """file: a seekable binary stream. budget: what the stand-ins may build in all; by default that of
        what the stream holds from its position on. A stream decompressed from a file is no measure: its
        reader passes the file's own budget, which the decompressed bytes were charged to first."""
        within = ReadsWithin(file)
        super().__init__(within, encoding="latin1")
        self.budget = ByteBudget(within.size) if budget is None else budget
        self._file_size = within.size
        self.opcodes = 0
        self.finished: dict[int, tuple] = {}  # id(stand-in) -> (stand-in, what it became)
        self.callables = [
            c
            for c in (*self.GLOBALS.values(), *self.MODULE_PREFIXES.values(), *self.extra_callables())
            if not isinstance(c, _Marker)
        ]

    # ---- names ----
    def find_class(self, module, name):
        found = self.GLOBALS.get((module, name))
        if found is None:
            found = next(
                (
                    cls
                    for prefix, cls in self.MODULE_PREFIXES.items()
                    if module == prefix or module.startswith(prefix + ".")
                ),
                None,
            )
        if found is None:
            raise PickleRefused(f"refusing to load {module}.{name}: not part of {self.what}")
        return found

    def extra_callables(self) -> tuple:
        """Stand-ins a subclass's ``find_class`` hands out beyond GLOBALS and MODULE_PREFIXES."""
        return ()

    def _allowed(self, func) -> bool:
        return any(func is c for c in self.callables)

    # ---- object creation ----
    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(args, tuple) or not self._allowed(func):
            raise PickleRefused(f"refusing to call {shown_value(func)}")
        if (
            isinstance(func, type)
            and issubclass(func, StandIn)
            and not issubclass(func, (DtypeSpec, PendingArray))
            and args
        ):
            raise PickleRefused(f"refusing to construct {func.__name__} with arguments")
        charged = any(func is c for c in _CHARGED)
        self.stack[-1] = func(*args, budget=self.budget) if charged else func(*args)

    def load_bytearray8(self):  # the standard one makes a bytearray of the claimed length first
        (length,) = struct.unpack("<Q", self.read(8))
        if length > self._file_size:
            raise PickleRefused(f"a byte array claims {length} bytes, more than the file holds")
        data = bytearray(length)
        self.readinto(data)
        self.append(data)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if kwargs:
            raise PickleRefused("refusing keyword arguments to a constructor")
        self.append(self._new(cls, args))

    def _new(self, cls, args):
        if not (isinstance(cls, type) and issubclass(cls, StandIn) and self._allowed(cls)):
            raise PickleRefused(f"refusing to create a {shown_value(cls)}")
        if issubclass(cls, DtypeSpec):
            return cls(*args)
        if args:
            raise PickleRefused(f"refusing to construct {cls.__name__} with arguments")
        return cls()

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, StandIn) or id(inst) in self.finished:
            raise PickleRefused(f"refusing to set the state of a {type(inst).__name__}")
        inst.__setstate__(state)
        result = inst.finish(self)
        self.finished[id(inst)] = (inst, result)
        self.stack[-1] = result

    # ---- memo: a stand-in fetched after it was built is what it became ----
    def _built(self):
        top = self.stack[-1]
        entry = self.finished.get(id(top))
        if entry is not None and entry[0] is top:
            self.stack[-1] = entry[1]

    def load_get(self):
        super().load_get()
        self._built()

    def load_binget(self):
        super().load_binget()
        self._built()

    def load_long_binget(self):
        super().load_long_binget()
        self._built()

    # ---- containers: keys and set items must be cheap to hash ----
    def _check_keys(self, keys):
        for key in keys:
            if not _is_plain_key(key):
                raise PickleRefused(
                    f"refusing a {type(key).__name__} as dict key or set item: only "
                    "plain numbers and strings are accepted"
                )

    @staticmethod
    def _check_target(stack: list, depth: int, kind: type) -> None:
        """Items may go only into real lists, dicts and sets (not into arrays or stand-ins)."""
        target = stack[-depth] if len(stack) >= depth else None
        if not isinstance(target, kind) or isinstance(target, StandIn):
            raise PickleRefused(f"refusing to add items to a {type(target).__name__}")

    def load_setitem(self):
        self._check_keys([self.stack[-2]])
        self._check_target(self.stack, 3, dict)
        super().load_setitem()

    def load_setitems(self):
        self._check_keys(self._after_mark()[::2])
        self._check_target(self.metastack[-1], 1, dict)
        super().load_setitems()

    def load_append(self):
        self._check_target(self.stack, 2, list)
        super().load_append()

    def load_appends(self):
        self._after_mark()
        self._check_target(self.metastack[-1], 1, list)
        super().load_appends()

    def load_dict(self):
        self._check_keys(self._after_mark()[::2])
        super().load_dict()

    def load_additems(self):
        self._check_keys(self._after_mark())
        self._check_target(self.metastack[-1], 1, set)
        super().load_additems()

    def load_frozenset(self):
        self._check_keys(self._after_mark())
        super().load_frozenset()

    def _after_mark(self) -> list:
        """The items pushed since the last MARK (MARK moved the stack before it to ``metastack``)."""
        if not self.metastack:
            raise PickleRefused("a container opcode without its MARK")
        return self.stack

    # ---- text ----
    def _check_text(self):
        """Every character of a string is a Unicode character: the pure-Python reader decodes UTF-8 with
        'surrogatepass', and UNICODE's escapes may name a surrogate, which nothing can encode (Blender
        refuses such a name, a report with one fails)."""
        top = self.stack[-1]
        if not top.isascii():
            try:
                top.encode("utf-8")
            except UnicodeEncodeError:
                raise PickleRefused("a text in the file holds a lone surrogate, which is no character") from None

    def load_unicode(self):
        super().load_unicode()
        self._check_text()

    def load_binunicode(self):
        super().load_binunicode()
        self._check_text()

    def load_short_binunicode(self):
        super().load_short_binunicode()
        self._check_text()

    def load_binunicode8(self):
        super().load_binunicode8()
        self._check_text()

    # ---- numbers ----
    def _check_int(self):
        top = self.stack[-1]
        if type(top) is int and top.bit_length() > MAX_INT_BITS:
            raise PickleRefused(f"refusing an integer of {top.bit_length()} bits")

    def load_int(self):
        super().load_int()
        self._check_int()

    def load_long(self):
        super().load_long()
        self._check_int()

    def load_long1(self):
        super().load_long1()
        self._check_int()

    def load_long4(self):
        n = int.from_bytes(self.read(4), "little", signed=True)
        if n < 0 or n * 8 > MAX_INT_BITS + 8:
            raise PickleRefused(f"refusing an integer of {n} bytes")
        self.append(pickle.decode_long(self.read(n)))

    def _refused(self):
        raise PickleRefused(
            "refusing pickle extensions, persistent ids, out-of-band buffers and "
            "old-style instances: not used by this file format"
        )

    # ---- the opcode table (built below for each class): every opcode counted, unsupported ones refused ----
    dispatch: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.dispatch = _build_dispatch(cls)

    def load(self):
        value = super().load()
        check_structure(value, self.OUTPUT_TYPES)
        return value


def _counted(func):
    def run(self):
        self.opcodes += 1
        if self.opcodes > MAX_OPCODES:
            raise PickleRefused(f"the pickle runs more than {MAX_OPCODES} operations")
        func(self)

    return run


def _build_dispatch(cls) -> dict:
    refused = {
        pickle.INST,
        pickle.OBJ,
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
        pickle.PERSID,
        pickle.BINPERSID,
        pickle.NEXT_BUFFER,
        pickle.READONLY_BUFFER,
    }
    table = {}
    for code, func in pickle._Unpickler.dispatch.items():
        own = getattr(cls, func.__name__)  # the override when there is one
        table[code] = _counted(cls._refused if bytes([code]) in refused else own)
    return table


RestrictedUnpickler.dispatch = _build_dispatch(RestrictedUnpickler)


def check_structure(value, output_types: tuple = ()) -> None:
    """Walk ``value`` as a tree (shared references counted each time they appear): at most
    MAX_NODES nodes and MAX_DEPTH levels, only plain values, containers and ``output_types``."""
    todo = [(value, 0)]
    nodes = 0
    while todo:
        item, depth = todo.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise PickleRefused(
                f"the pickled data nests deeper than {MAX_DEPTH} levels or expands to more than "
                f"{MAX_NODES} values (shared or circular references)"
            )
        if isinstance(item, _PLAIN_VALUES):
            continue
        if type(item) in (list, tuple, set, frozenset):
            todo.extend((x, depth + 1) for x in item)
        elif isinstance(item, dict):
            todo.extend((x, depth + 1) for kv in item.items() for x in kv)
        elif isinstance(item, output_types):
            todo.extend((x, depth + 1) for x in item.state.values())
        else:
            raise PickleRefused(f"the file holds an incomplete or unexpected {type(item).__name__}")


def describe_failure(err: BaseException) -> str:
    """A short reason for a failed load (the message of refusals, the parser's failure in words otherwise)."""
    if isinstance(err, (PickleRefused, UntrustedDataError)):
        return str(err)
    return failure_words(err)
