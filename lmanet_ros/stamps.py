"""Message stamps as integer nanoseconds: the one representation of time in lmanet_ros.

Header stamps (``builtin_interfaces/Time``: ``sec`` int32, ``nanosec`` uint32) are turned into one
``int`` of nanoseconds as soon as they are read and compared exactly from then on; floats of
seconds appear only where a duration is shown to a person or compared with a parameter given in
seconds. Works on rclpy and rosbags messages alike (anything with ``sec`` and ``nanosec``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["NS_PER_S", "stamp_ns", "split_ns", "seconds_to_ns", "ns_to_seconds"]

#: Nanoseconds in one second.
NS_PER_S = 1_000_000_000


def stamp_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (or a header: its ``stamp``) as integer nanoseconds."""
    stamp = getattr(stamp, "stamp", stamp)
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) with ``0 <= nanosec < 1e9``, for a Time message."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def seconds_to_ns(seconds: float) -> int:
    """A duration or time in (float) seconds as integer nanoseconds, rounded to the nearest."""
    return int(round(float(seconds) * NS_PER_S))


def ns_to_seconds(ns: int) -> float:
    """Integer nanoseconds as float seconds (for display and rates only)."""
    return int(ns) / NS_PER_S
