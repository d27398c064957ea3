"""``core.safe_json``: JSON from untrusted sources parsed without exhausting the parser's recursion."""

import json

import pytest

from vibe_blender.core.safe_json import MAX_JSON_DEPTH, JSONTooDeep, json_too_deep, loads


def test_nesting_up_to_the_bound_parses_and_one_level_more_is_refused():
    assert loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(JSONTooDeep, match=f"JSON nested deeper than {MAX_JSON_DEPTH} levels"):
        loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert issubclass(JSONTooDeep, ValueError)  # every `except ValueError` around a parse catches it


@pytest.mark.parametrize("depth", [10_000, 300_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth):
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(JSONTooDeep):
            loads(text)
        with pytest.raises(JSONTooDeep):
            loads(text.encode())


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"a": "[" * 1000 + '\\"{' * 1000, "b": ["]" * 5]})
    assert not json_too_deep(text, 2)
    assert loads(text, max_depth=2)["b"] == ["]" * 5]
    assert json_too_deep('["\\\\", [[1]]]', 2)  # an escaped backslash ends before the quote


def test_bytes_are_decoded_as_json_loads_decodes_them():
    value = {"name": "Größe", "n": [1, 2]}
    for data in (
        json.dumps(value).encode(),
        json.dumps(value).encode("utf-16"),
        b"\xef\xbb\xbf" + json.dumps(value).encode(),
    ):
        assert loads(data) == value
    with pytest.raises(ValueError):
        loads(b'{"a": "\xff"}')
    with pytest.raises(ValueError):
        loads("{not json")
