"""Argument types shared by the `lmanet` subcommands."""
import argparse

import pytest

from lmanet_ros.tools.common import float_in, int_at_least, parse_size, positive_float


@pytest.mark.parametrize("parse, text, expected", [
    (int_at_least(1), "3", 3), (int_at_least(0), "0", 0), (positive_float, "2e-4", 2e-4),
    (float_in(0.0, 1000.0), "1000", 1000.0), (parse_size, "256x512", (256, 512)),
])
def test_accepted(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("parse, text, message", [
    (int_at_least(1), "0", ">= 1"), (int_at_least(0), "-1", ">= 0"),
    (int_at_least(1), "x", "integer"), (positive_float, "0", "> 0"),
    (float_in(0.0, 1000.0), "1000.5", "<= 1000"), (positive_float, "abc", "number"),
    (parse_size, "256", "256x512"), (parse_size, "0x8", "positive"),
])
def test_refused_with_a_reason(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)
