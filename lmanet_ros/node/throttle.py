"""At most one log line of a kind per period, with the count of lines held back (no ROS here)."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Hashable

__all__ = ["Throttle"]


class Throttle:
    """At most one log line per key and ``period`` seconds; tells how many were held back.

    Keys are anything hashable, e.g. ``(camera, "bad_input")``. Thread-safe.
    """

    def __init__(self, period: float) -> None:
        self._period = period
        self._last: dict[Hashable, float] = {}
        self._held: Counter = Counter()
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> int | None:
        """None if this line is to be held back, else the count held back since the last."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._held[key] += 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)
