"""The one representation of time (integer nanoseconds) and the one size parser."""
from types import SimpleNamespace

import pytest

from lmanet_ros.sizes import format_size, parse_size
from lmanet_ros.stamps import NS_PER_S, ns_to_seconds, seconds_to_ns, split_ns, stamp_ns


def time_msg(sec: int, nanosec: int) -> SimpleNamespace:
    return SimpleNamespace(sec=sec, nanosec=nanosec)


def test_stamp_ns_is_exact_beyond_float_resolution():
    stamp = time_msg(1_700_000_000, 123_456_789)
    assert stamp_ns(stamp) == 1_700_000_000_123_456_789
    assert stamp_ns(SimpleNamespace(stamp=stamp)) == stamp_ns(stamp)   # a header works too
    neighbour = time_msg(1_700_000_000, 123_456_790)
    assert stamp_ns(neighbour) - stamp_ns(stamp) == 1
    # the float seconds this replaces could not tell them apart
    assert stamp.sec + stamp.nanosec * 1e-9 == neighbour.sec + neighbour.nanosec * 1e-9


@pytest.mark.parametrize("ns", [0, 1, NS_PER_S - 1, NS_PER_S, 1_700_000_000_123_456_789])
def test_split_round_trips(ns):
    sec, nanosec = split_ns(ns)
    assert 0 <= nanosec < NS_PER_S and stamp_ns(time_msg(sec, nanosec)) == ns


def test_second_conversions():
    assert seconds_to_ns(0.5) == 500_000_000 and seconds_to_ns(1 / 17) == 58_823_529
    assert ns_to_seconds(1_500_000_000) == 1.5


@pytest.mark.parametrize("text, kwargs, expected", [
    ("256x512", {}, (256, 512)), (" 64 X 128 ", {}, (64, 128)), ("7x9", {}, (7, 9)),
    ("128x256", {"multiple_of": 8}, (128, 256)), ("8x8", {"minimum": 8}, (8, 8))])
def test_parse_size(text, kwargs, expected):
    assert parse_size(text, **kwargs) == expected
    assert format_size(expected) == f"{expected[0]}x{expected[1]}"


@pytest.mark.parametrize("text, kwargs, match", [
    ("256", {}, "HxW"), ("axb", {}, "HxW"), ("0x8", {}, "positive"),
    ("100x256", {"multiple_of": 8}, "multiples of 8"), ("4x16", {"minimum": 8}, "at least 8")])
def test_parse_size_refuses(text, kwargs, match):
    with pytest.raises(ValueError, match=match):
        parse_size(text, **kwargs)
