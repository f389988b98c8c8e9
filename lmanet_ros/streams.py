"""Per-stream state of the temporal memory and the rules that reset it (no ROS, no torch maths).

A stream is one camera. Its memory is only meaningful for consecutive frames of one scene as the
camera saw them, so it is cleared (and the clearing logged and counted, the way tf2 clears its
buffer on a jump back in time) when:

- time jumps back (a bag loops, a replay restarts): ``time_jump_back``;
- the gap since the last processed frame exceeds ``MemoryPolicy.max_gap`` seconds: ``gap``;
- the frame size changes: ``size_change``; the header's frame_id changes: ``frame_id_change``;
- somebody asks (reset service, API): ``request``; a parameter that changes what the memory
  means (its length) changes: ``parameter``.

Frames with a stamp equal to the previous one are processed normally (no reset) and counted as
duplicates. ``MemoryPolicy.stride`` stores only every k-th processed frame in the memory, for
cameras much faster than the 17 Hz the published model was trained on.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any

from lmanet_ros.stamps import ns_to_seconds, seconds_to_ns


class ResetReason(str, enum.Enum):
    """Why a stream's memory was cleared; the value is what logs and diagnostics show."""

    TIME_JUMP_BACK = "time_jump_back"
    GAP = "gap"
    SIZE_CHANGE = "size_change"
    FRAME_ID_CHANGE = "frame_id_change"
    REQUEST = "request"
    PARAMETER = "parameter"


@dataclass(frozen=True)
class MemoryPolicy:
    """How the temporal memory of every stream is fed and when it is cleared.

    The memory length T is not part of the policy: the pipeline holds the value in force
    (:func:`lmanet_ros.models.weights.resolve_memory_length` decides it).

    Attributes:
        max_gap: largest gap in seconds between two processed frames that keeps the memory;
            ``<= 0`` disables the rule.
        stride: store every ``stride``-th processed frame in the memory (1 = every frame).
    """

    max_gap: float = 1.0
    stride: int = 1

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    @property
    def max_gap_ns(self) -> int:
        """``max_gap`` in integer nanoseconds (``<= 0``: the rule is off)."""
        return seconds_to_ns(self.max_gap)


@dataclass
class StreamStats:
    """Counters of one stream since start (what /diagnostics and eval reports show).

    ``last_gap_s``: seconds from the previous processed frame's stamp to the last one's
    (negative after a jump back; None before the second frame), the gap a ``gap`` reset saw.
    """

    processed: int = 0
    duplicates: int = 0
    stored: int = 0
    memory_fill: int = 0
    resets: dict[str, int] = field(default_factory=dict)
    last_gap_s: float | None = None

    def copy(self) -> "StreamStats":
        """Return an independent snapshot."""
        return StreamStats(self.processed, self.duplicates, self.stored, self.memory_fill,
                           dict(self.resets), self.last_gap_s)


@dataclass(frozen=True)
class Admission:
    """What the reset rules decided for one incoming frame.

    Attributes:
        reset_reason: why the memory was cleared before this frame, or None.
        duplicate: the frame's stamp equals the previous processed frame's stamp.
        store: the frame's memory entry is to be kept (stride rule).
    """

    reset_reason: str | None
    duplicate: bool
    store: bool


class StreamState:
    """The memory of one stream plus what the reset rules need to know about its last frame.

    The memory itself is opaque here (whatever the model's ``step`` returns, None = empty).
    ``request_reset`` may be called from any thread; the reset takes effect before the stream's
    next frame, so a caller never waits for an inference in progress.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.memory: Any = None
        self.stats = StreamStats()
        self._last_stamp: int | None = None
        self._last_size: tuple[int, int] | None = None
        self._last_frame_id: str | None = None
        self._since_reset = 0
        self._pending_reset: str | None = None
        self._lock = threading.Lock()

    def request_reset(self, reason: str) -> None:
        """Clear the memory before the next frame of this stream (thread-safe, returns at once)."""
        with self._lock:
            self._pending_reset = reason

    def admit(self, stamp_ns: int, size: tuple[int, int], frame_id: str,
              policy: MemoryPolicy) -> Admission:
        """Apply the reset rules for a frame about to be processed and update the bookkeeping.

        Args:
            stamp_ns: the frame's header stamp in integer nanoseconds (compared exactly:
                frames 1 ns apart are distinct, a stamp 1 ns earlier is a jump back).
            size: (height, width) of the frame in pixels.
            frame_id: the frame's header frame_id.
            policy: the memory policy in force.
        """
        with self._lock:
            reason, self._pending_reset = self._pending_reset, None
        duplicate = False
        if self._last_stamp is not None:
            duplicate = stamp_ns == self._last_stamp
            self.stats.last_gap_s = ns_to_seconds(stamp_ns - self._last_stamp)
            if reason is not None:
                pass
            elif stamp_ns < self._last_stamp:
                reason = ResetReason.TIME_JUMP_BACK.value
            elif size != self._last_size:
                reason = ResetReason.SIZE_CHANGE.value
            elif frame_id != self._last_frame_id:
                reason = ResetReason.FRAME_ID_CHANGE.value
            elif policy.max_gap > 0 and stamp_ns - self._last_stamp > policy.max_gap_ns:
                reason = ResetReason.GAP.value
        if reason is not None:
            self.memory = None
            self._since_reset = 0
            self.stats.resets[reason] = self.stats.resets.get(reason, 0) + 1
        store = self._since_reset % policy.stride == 0
        self._since_reset += 1
        self._last_stamp, self._last_size, self._last_frame_id = stamp_ns, size, frame_id
        self.stats.processed += 1
        self.stats.duplicates += int(duplicate)
        self.stats.stored += int(store)
        return Admission(reason, duplicate, store)
