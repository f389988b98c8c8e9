"""Frames waiting for the node's worker, per camera: the latest-frame slot and the bounded FIFO.

No ROS here: the subscription callbacks :meth:`FrameIntake.put` whatever they received (the node
puts ``(message, monotonic arrival time)``), the worker :meth:`FrameIntake.take` s one item per
camera at a time.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

__all__ = ["ALL_MODE_CAPACITY", "MODES", "FrameIntake"]

#: Frames a camera may have waiting in ``all`` mode before its subscription callback waits.
ALL_MODE_CAPACITY = 3
#: The processing modes (the ``processing_mode`` parameter).
MODES = ("latest", "all")


def _check_mode(mode: str) -> None:
    """ValueError unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode must be {' or '.join(MODES)}, got {mode!r}")


class FrameIntake:
    """Frames waiting for the worker, per camera (no ROS here).

    ``latest`` mode: one slot per camera; a new frame replaces the one waiting (a drop), so the
    worker always gets the newest frame and latency stays bounded. ``all`` mode: a FIFO of
    ``capacity`` frames per camera; :meth:`put` waits while it is full, which stops the executor
    from taking more messages of that camera (DDS keeps them; a reliable KEEP_ALL publisher is
    throttled instead of the node queueing without bound).
    """

    def __init__(self, mode: str = "latest", capacity: int = ALL_MODE_CAPACITY) -> None:
        _check_mode(mode)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._mode = mode
        self._capacity = capacity
        self._queues: dict[str, deque] = {}
        self._cond = threading.Condition()
        self._closed = False

    @property
    def mode(self) -> str:
        """``latest`` or ``all``."""
        return self._mode

    def add(self, key: str) -> None:
        """Start accepting frames of camera ``key``."""
        with self._cond:
            self._queues.setdefault(key, deque())

    def remove(self, key: str) -> None:
        """Stop accepting frames of ``key``; its waiting frames are discarded."""
        with self._cond:
            self._queues.pop(key, None)
            self._cond.notify_all()

    def set_mode(self, mode: str) -> dict[str, int]:
        """Switch mode; going to ``latest`` keeps only the newest frame of each camera.

        Returns the frames discarded, per camera key (only cameras that lost frames).
        """
        _check_mode(mode)
        discarded: dict[str, int] = {}
        with self._cond:
            self._mode = mode
            if mode == "latest":
                for key, queue in self._queues.items():
                    if len(queue) > 1:
                        discarded[key] = len(queue) - 1
                        while len(queue) > 1:
                            queue.popleft()
            self._cond.notify_all()
        return discarded

    def put(self, key: str, item: Any) -> int:
        """Hand a frame of camera ``key`` to the worker; returns the frames dropped for it.

        In ``all`` mode this waits while the camera's FIFO is full (until the worker takes a
        frame, the mode changes, the camera is removed or the intake is closed).
        """
        with self._cond:
            while True:
                queue = self._queues.get(key)
                if queue is None or self._closed:
                    return 1  # not accepted: counted as a drop
                if self._mode == "latest":
                    dropped = len(queue)
                    queue.clear()
                    queue.append(item)
                    self._cond.notify_all()
                    return dropped
                if len(queue) < self._capacity:
                    queue.append(item)
                    self._cond.notify_all()
                    return 0
                self._cond.wait(0.1)

    def take(self, timeout: float) -> list[tuple[str, Any]]:
        """The oldest waiting frame of every camera that has one (empty after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                batch = [(key, queue.popleft()) for key, queue in self._queues.items() if queue]
                if batch:
                    self._cond.notify_all()  # room for callbacks waiting in ``all`` mode
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return []

    def waiting(self, key: str) -> int:
        """Frames of ``key`` waiting now."""
        with self._cond:
            queue = self._queues.get(key)
            return len(queue) if queue is not None else 0

    def close(self) -> None:
        """Release every waiting caller; nothing is accepted or handed out afterwards."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
