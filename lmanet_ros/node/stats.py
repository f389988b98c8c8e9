"""Counters of one camera for /diagnostics, and the frozen snapshot one diagnostics message reads.

No ROS here. :class:`CameraStats` counts what only the node sees (messages received, dropped,
undecodable, failed, rendered, QoS events, timings); what the pipeline's stream already counts
(frames admitted, duplicates, memory fill, resets by reason: :class:`lmanet_ros.streams.
StreamStats`) is not counted again: the worker hands the stream's counters
(``pipeline.stats(stream)``) over with each processed frame, so that a :class:`CameraSnapshot`
shows both as they were when that frame was done.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from lmanet_ros.streams import StreamStats

__all__ = ["CameraSnapshot", "CameraStats"]


@dataclass(frozen=True)
class CameraSnapshot:
    """One camera's counters at one diagnostics message.

    Totals count since start; ``period_*`` and the timing tuples cover the time since the
    previous snapshot. Times are milliseconds, ``last_received`` is ``time.monotonic()`` seconds.
    """

    received: int = 0
    """Messages taken by the subscription callback."""
    dropped: int = 0
    """Frames replaced or refused before the worker took them."""
    processed: int = 0
    """Frames segmented (each published but a delayed model's repeats)."""
    bad_inputs: int = 0
    """Messages that could not be decoded (``last_bad_input`` says why, for the last one)."""
    over_budget: int = 0
    """Of ``bad_inputs``, frames refused before decoding for their size (``max_frame_pixels``,
    ``max_network_pixels``)."""
    errors: int = 0
    """Decoded frames the pipeline could not process (``last_error`` says why)."""
    batch_size: int = 0
    """Streams that shared the last inference of this camera."""
    batched: int = 0
    """Frames of this camera segmented in a batch of more than one stream."""
    rendered: int = 0
    """Frames whose colour mask was rendered (colour or overlay subscribed)."""
    incompatible_qos: int = 0
    """Incompatible-QoS events of the input subscription."""
    last_bad_input: str = ""
    last_error: str = ""
    last_received: float | None = None
    """When the last message arrived, or None."""
    period_received: int = 0
    period_processed: int = 0
    period_bad: int = 0
    period_errors: int = 0
    processing_ms: tuple[float, ...] = ()
    """Decode to published, per frame of the period."""
    inference_ms: tuple[float, ...] = ()
    """The network step (shared by a batch), per frame of the period."""
    latency_ms: tuple[float, ...] = ()
    """Arrival of the labelled frame to published, per published result of the period (a
    delayed model: one frame period more than compute)."""
    input_delay_ms: tuple[float, ...] = ()
    """Publisher's write to arrival (DDS source timestamp), where known."""
    stream: StreamStats = field(default_factory=StreamStats)
    """The pipeline's counters of this camera's stream (duplicates, memory fill, resets by
    reason) after the last processed frame."""
    worker_cpu_s: float | None = None
    """CPU time in seconds of the thread that processed this camera's last frame (the node's
    worker: ``time.thread_time()`` when the frame was counted; it grows across cameras, every
    camera being processed on that thread), None before the first frame."""


class CameraStats:
    """The node's own counters of one camera (written by callbacks and the worker, thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = {name: 0 for name in ("received", "dropped", "processed", "bad_inputs",
                                             "over_budget", "errors", "batched", "rendered",
                                             "incompatible_qos")}
        self._period = {name: 0 for name in ("received", "processed", "bad", "errors")}
        self._times: dict[str, list[float]] = {name: [] for name in (
            "processing_ms", "inference_ms", "latency_ms", "input_delay_ms")}
        self._batch_size = 0
        self._stream = StreamStats()
        self._last_bad_input = ""
        self._last_error = ""
        self._last_received: float | None = None
        self._worker_cpu_s: float | None = None

    def on_received(self, now: float, input_delay_ms: float | None = None) -> None:
        """A message arrived at monotonic time ``now`` (``input_delay_ms``: since its
        publisher wrote it, when known)."""
        with self._lock:
            self._totals["received"] += 1
            self._period["received"] += 1
            self._last_received = now
            if input_delay_ms is not None:
                self._times["input_delay_ms"].append(input_delay_ms)

    def on_dropped(self, count: int) -> None:
        """``count`` frames replaced (or refused) before they were processed."""
        with self._lock:
            self._totals["dropped"] += count

    def on_bad_input(self, reason: str, over_budget: bool = False) -> None:
        """A message that could not be decoded, and why; ``over_budget``: refused for its size."""
        with self._lock:
            self._totals["bad_inputs"] += 1
            self._totals["over_budget"] += int(over_budget)
            self._period["bad"] += 1
            self._last_bad_input = reason

    def on_error(self, reason: str) -> None:
        """A frame that decoded but could not be processed, and why."""
        with self._lock:
            self._totals["errors"] += 1
            self._period["errors"] += 1
            self._last_error = reason

    def on_rendered(self) -> None:
        """The colour mask of a frame was rendered."""
        with self._lock:
            self._totals["rendered"] += 1

    def on_incompatible_qos(self) -> None:
        """A publisher offers QoS the input subscription cannot match."""
        with self._lock:
            self._totals["incompatible_qos"] += 1

    def on_processed(self, batch_size: int, inference_ms: float, processing_ms: float,
                     latency_ms: float | None, stream: StreamStats) -> None:
        """A frame was segmented (in a batch of ``batch_size`` streams) and its result
        published, ``latency_ms`` after the labelled frame arrived (None: nothing published, a
        delayed model's repeat); ``stream``: the pipeline's counters of the camera's stream
        after it. Call it on the processing thread: its CPU time is recorded
        (:attr:`CameraSnapshot.worker_cpu_s`)."""
        cpu_s = time.thread_time()
        with self._lock:
            self._worker_cpu_s = cpu_s
            self._stream = stream
            self._totals["processed"] += 1
            self._period["processed"] += 1
            self._batch_size = batch_size
            self._totals["batched"] += int(batch_size > 1)
            self._times["processing_ms"].append(processing_ms)
            self._times["inference_ms"].append(inference_ms)
            if latency_ms is not None:
                self._times["latency_ms"].append(latency_ms)

    def roll(self) -> CameraSnapshot:
        """The snapshot for one diagnostics message; the period counts and timings restart."""
        with self._lock:
            snapshot = CameraSnapshot(
                **self._totals, batch_size=self._batch_size,
                last_bad_input=self._last_bad_input, last_error=self._last_error,
                last_received=self._last_received,
                **{f"period_{name}": count for name, count in self._period.items()},
                **{name: tuple(values) for name, values in self._times.items()},
                stream=self._stream, worker_cpu_s=self._worker_cpu_s)
            self._period = dict.fromkeys(self._period, 0)
            for values in self._times.values():
                values.clear()
        return snapshot
