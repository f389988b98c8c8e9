"""Is a matched publisher's data reaching the node? (no ROS here).

Large raw images published best effort over DDS transports that cut them into UDP fragments
(Fast DDS's defaults) mostly never arrive: the publisher is matched, the subscription is
silent, nothing fails. A :class:`DeliveryWatch` per camera sees it from what the node knows:

- ``no_samples``: a publisher has been matched for :data:`SILENT_AFTER_S` seconds and not one
  image arrived since the match;
- ``losing``: images arrive but the publisher's sequence numbers (rclpy's MessageInfo) skip at
  least :data:`LOST_FRACTION` of them in a check period (counted while one publisher is
  matched: the numbers of several publishers interleave);
- ``ok`` otherwise, ``no_publisher`` while none is matched.

:meth:`DeliveryWatch.update` is called periodically (the diagnostics timer) with the publisher
count; it tells when to warn: once per episode of trouble, at most every :data:`WARN_EVERY_S`.
:func:`advice` is the warning's text: what to do about it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["LOST_FRACTION", "MIN_LOST", "SILENT_AFTER_S", "WARN_EVERY_S", "Delivery",
           "DeliveryWatch", "advice"]

#: Seconds a publisher is matched without any image before ``no_samples``.
SILENT_AFTER_S = 5.0
#: Share of the images of a check period skipped in sequence before ``losing``...
LOST_FRACTION = 0.25
#: ...and at least this many of them.
MIN_LOST = 3
#: Smallest interval between two warnings of one camera.
WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class Delivery:
    """The delivery state of one camera at one check.

    Attributes:
        state: ``ok``, ``no_publisher``, ``no_samples`` or ``losing``.
        publishers: publishers matched on the input topic.
        received: images received since the current match began.
        lost: images skipped in sequence since the current match began.
        matched_for_s: seconds since a publisher was first matched (0 without one).
        warn: whether the node should log the warning now.
    """

    state: str
    publishers: int = 0
    received: int = 0
    lost: int = 0
    matched_for_s: float = 0.0
    warn: bool = False

    @property
    def trouble(self) -> bool:
        """Whether a publisher is matched but its images do not (all) arrive."""
        return self.state in ("no_samples", "losing")

    def summary(self) -> str:
        """The state in words, for the log and diagnostics."""
        if self.state == "no_samples":
            return (f"{self.publishers} publisher(s) matched for {self.matched_for_s:.0f} s "
                    f"but no image arrived")
        if self.state == "losing":
            return (f"images lost in transport: {self.lost} skipped, {self.received} received "
                    f"since the publisher matched")
        return self.state.replace("_", " ")


class DeliveryWatch:
    """One camera's delivery state from arrivals, sequence numbers and the publisher count.

    :meth:`on_sample` runs in the subscription callback, :meth:`update` on a timer; both may run
    at once (a lock guards the counters).
    """

    def __init__(self, silent_after_s: float = SILENT_AFTER_S,
                 lost_fraction: float = LOST_FRACTION, min_lost: int = MIN_LOST,
                 warn_every_s: float = WARN_EVERY_S) -> None:
        self._silent_after_s = silent_after_s
        self._lost_fraction = lost_fraction
        self._min_lost = min_lost
        self._warn_every_s = warn_every_s
        self._lock = threading.Lock()
        self._matched_since: float | None = None
        self._received = 0
        self._lost = 0
        self._period_received = 0
        self._period_lost = 0
        self._last_sequence: int | None = None
        self._state = "no_publisher"
        self._last_warning: float | None = None

    def on_sample(self, sequence: int | None = None) -> None:
        """An image arrived; ``sequence``: its publication sequence number, when known."""
        with self._lock:
            self._received += 1
            self._period_received += 1
            last, self._last_sequence = self._last_sequence, sequence
            if sequence is not None and last is not None and sequence > last + 1:
                self._period_lost += sequence - last - 1

    def update(self, now: float, publishers: int) -> Delivery:
        """The state at ``now`` (monotonic seconds) with ``publishers`` matched."""
        with self._lock:
            received, lost = self._period_received, self._period_lost
            self._period_received = self._period_lost = 0
            if publishers <= 0:
                self._matched_since, self._last_sequence = None, None
                self._received = self._lost = 0
                self._state = "no_publisher"
                return Delivery("no_publisher")
            if self._matched_since is None:
                self._matched_since = now
                self._received, self._lost = received, 0
            if publishers == 1:  # sequence numbers of several publishers interleave
                self._lost += lost
            else:
                lost = 0
            matched_for = now - self._matched_since
            if self._received == 0 and matched_for >= self._silent_after_s:
                state = "no_samples"
            elif lost >= self._min_lost and lost >= self._lost_fraction * (lost + received):
                state = "losing"
            elif self._state == "losing" and lost:  # still losing, below the threshold
                state = "losing"
            else:
                state = "ok"
            warn = state in ("no_samples", "losing") and state != self._state and (
                self._last_warning is None or now - self._last_warning >= self._warn_every_s)
            if warn:
                self._last_warning = now
            self._state = state
            return Delivery(state, publishers, self._received, self._lost, matched_for, warn)


def advice(topic: str, delivery: Delivery, profile_file: str) -> str:
    """The warning of a camera in trouble: what happens and what to do about it."""
    return (f"{topic}: {delivery.summary()}. Large raw images need a DDS transport for large "
            f"samples in the camera driver's process too: start it with "
            f"FASTDDS_DEFAULT_PROFILES_FILE={profile_file} (this node's default dds_profile "
            f"shm_udp; same host), or publish compressed images and set input.transport "
            f"compressed, or, for raw images from another host, raise the kernel's socket "
            f"buffers (sysctl net.core.rmem_max, net.core.wmem_max)")
