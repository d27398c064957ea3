"""The one range check behind the job options and the training settings."""

import math

import pytest

from vibe_server.value_range import ValueRange


@pytest.mark.parametrize(
    "value_range, inside, outside",
    [
        (ValueRange(ge=1), [1, 2, 10**9], [0, -1, 0.999]),
        (ValueRange(gt=0.0), [1e-9, 5.0], [0.0, -1.0]),
        (ValueRange(ge=0.0, le=1.0), [0.0, 0.5, 1.0], [-0.1, 1.1]),
        (ValueRange(ge=0.0, lt=1.0), [0.0, 0.999], [1.0, -0.5]),
        (ValueRange(gt=0.0, lt=1.0), [0.5], [0.0, 1.0]),
        (ValueRange(), [0, -5.0, 1e300], []),
    ],
)
def test_membership_follows_each_bound(value_range, inside, outside):
    assert all(v in value_range for v in inside)
    assert not any(v in value_range for v in outside)


@pytest.mark.parametrize("value_range", [ValueRange(), ValueRange(ge=0.0), ValueRange(le=1.0)])
def test_nan_and_infinities_are_never_in_range(value_range):
    for value in (math.nan, math.inf, -math.inf):
        assert value not in value_range


@pytest.mark.parametrize(
    "value_range, words, symbols",
    [
        (ValueRange(ge=1), "at least 1", "≥ 1"),
        (ValueRange(gt=0.0), "more than 0", "> 0"),
        (ValueRange(ge=1, le=1000), "between 1 and 1000", "1..1000"),
        (ValueRange(ge=0.0, lt=1.0), "at least 0 and less than 1", "≥ 0 and < 1"),
        (ValueRange(gt=0.0, lt=1.0), "more than 0 and less than 1", "> 0 and < 1"),
        (ValueRange(le=0.5), "at most 0.5", "≤ 0.5"),
        (ValueRange(ge=0, le=2**32 - 1), "between 0 and 4294967295", "0..4294967295"),
        (ValueRange(), "", ""),
    ],
)
def test_words_and_symbols_name_every_bound(value_range, words, symbols):
    assert value_range.words() == words
    assert value_range.symbols() == symbols


def test_a_huge_whole_number_is_simply_out_of_range():
    assert 10**400 not in ValueRange(ge=1, le=1000)
    assert 10**400 in ValueRange(ge=1)  # a whole number is finite, however large
