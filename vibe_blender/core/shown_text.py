"""Text that came from outside (a server's answer, a file's names and notes), made safe to show in a
message, on a terminal or in Blender's UI: printable characters only, and a bounded length."""

from __future__ import annotations

import numbers
import re
import reprlib
import types

MAX_TEXT_CHARS = 1000  # server messages shown in the UI
# of a datablock's or a bone's name in Blender 4.2 (later versions allow more): the names made fit all
MAX_NAME_BYTES = 63
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: a terminal acts on them


def surrogates_escaped(text: str) -> str:
    """``text`` as any UTF-8 output (a JSON answer, a terminal) takes it: a file name that is not valid
    UTF-8 reaches Python with lone surrogates ('\\udc80'), which no encoder takes; they are shown
    escaped instead."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: str) -> str:
    """``text`` that any UTF-8 output takes and that shows as it is: the surrogates of a file name that
    is not valid UTF-8 and control characters (a new line, an escape sequence that would recolour or
    rewrite the terminal) become backslash escapes."""
    text = surrogates_escaped(text)
    return CONTROL_CHARACTERS.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def printable_lines(text: str) -> str:
    """``text`` through :func:`printable` line by line, for a message of several lines: its line breaks
    stay (those of a name it quotes too: they cannot be told apart), every other control character is
    escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


def display_text(value, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` as text of printable characters only, at most ``limit`` long."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _ShortRepr(reprlib.Repr):
    """reprlib's cut-offs, small: a value built from a file may hold one object many times over (a tuple
    of a tuple of ... each twice), and its whole repr, which ``f"{x!r:.60}"`` builds before cutting,
    would then never end. Objects whose own repr may be long are named by their type."""

    def __init__(self):
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxarray = 4
        self.maxstring = self.maxlong = self.maxother = 40

    def repr_int(self, x, level):
        # str() of an int past 4300 digits raises, and costs time quadratic in its length before that
        return super().repr_int(x, level) if x.bit_length() <= 256 else f"<int of {x.bit_length()} bits>"

    def repr_instance(self, x, level):
        if isinstance(x, (bytes, bytearray)):
            return repr(x[: self.maxstring])
        short = (numbers.Number, type(None), type, types.FunctionType, types.BuiltinFunctionType)
        # numbers, classes and functions have short reprs, and so do this package's own stand-ins
        if isinstance(x, short) or type(x).__module__.startswith("vibe_blender."):
            return super().repr_instance(x, level)
        return f"<{type(x).__name__}>"


_SHORT_REPR = _ShortRepr()


def shown_value(value, limit: int = 60) -> str:
    """A repr of ``value`` (from a file) for an error message, built in bounded time and at most
    ``limit`` characters long."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
