"""JSON from a source that is not trusted (a server's answer, a message on the live stream, a file the
user picked), parsed without letting it exhaust the parser's recursion.

``json.loads`` recurses once per nested ``[`` or ``{``: a few hundred kB of brackets raise
RecursionError, which is no ValueError and so escapes every ``except ValueError`` around a parse (and
near the limit can crash the interpreter outright). :func:`loads` counts the nesting first, on the
text, outside strings, and refuses anything deeper than ``max_depth`` with :class:`JSONTooDeep` (a
ValueError). The server checks request bodies with the same :func:`json_too_deep`. Standard library
only: it runs inside Blender.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64  # what this project sends nests 4 levels at most

# A JSON string (its closing quote optional: the parser refuses an unterminated one), or a bracket.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class JSONTooDeep(ValueError):
    """The text nests arrays or objects deeper than ``max_depth``; it was not parsed."""

    def __init__(self, max_depth: int):
        super().__init__(f"JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def _decoded(data: bytes | bytearray, errors: str) -> str:
    """Bytes -> text the way ``json.loads`` decodes them (UTF-8, -16 or -32, found from the first bytes)."""
    return bytes(data).decode(json.detect_encoding(data), errors)


def json_too_deep(text: str | bytes | bytearray, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets nest deeper than ``max_depth`` outside strings: checked before parsing,
    in time linear in the length of the text and without recursion."""
    if isinstance(text, (bytes, bytearray)):
        text = _decoded(text, "replace")
    if text.count("[") + text.count("{") <= max_depth:  # the common case, without a scan
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = match.group()[0]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads(text: str | bytes | bytearray, *, max_depth: int = MAX_JSON_DEPTH, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)`` that raises ValueError for every bad text: :class:`JSONTooDeep`
    when it nests deeper than ``max_depth``, ``json.JSONDecodeError`` or ``UnicodeDecodeError`` else."""
    if isinstance(text, (bytes, bytearray)):
        text = _decoded(text, "surrogatepass")
    if json_too_deep(text, max_depth):
        raise JSONTooDeep(max_depth)
    return json.loads(text, **kwargs)
