"""What the node logs and counts when a frame goes wrong or a memory is reset: one throttled log
line per kind and camera (with how many were held back), the camera's counters updated.

:class:`EventLog` takes the node's logger (anything with ``info``, ``warning``
and ``error``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmanet_ros.node.loading import one_line
from lmanet_ros.node.throttle import Throttle
from lmanet_ros.streams import ResetReason

if TYPE_CHECKING:
    from lmanet_ros.node.ports import CameraPort

__all__ = ["EventLog", "cuda_oom_reason"]


def _held_text(held: int, what: str = "more since the last message") -> str:
    return f" ({held} {what})" if held else ""


def cuda_oom_reason(exc: Exception, device: Any) -> str | None:
    """For PyTorch's CUDA out-of-memory error: release the allocator's cached blocks on
    ``device`` (so that the next frame can run) and say what the device holds now (MiB
    allocated and reserved); None for any other error. torch is imported by then."""
    import torch
    if not isinstance(exc, torch.cuda.OutOfMemoryError):
        return None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return "CUDA out of memory: frame skipped"
    torch.cuda.empty_cache()
    allocated = torch.cuda.memory_allocated(device) / 2 ** 20
    reserved = torch.cuda.memory_reserved(device) / 2 ** 20
    return (f"CUDA out of memory: frame skipped, cache released ({allocated:.0f} MiB "
            f"allocated, {reserved:.0f} MiB reserved on {device})")


class EventLog:
    """Throttled log lines (at most one per kind and camera every ``period_s`` seconds) and the
    camera counters of frame events."""

    def __init__(self, logger: Any, period_s: float) -> None:
        self._log = logger
        self._throttle = Throttle(period_s)

    def bad_input(self, port: "CameraPort", reason: str, over_budget: bool = False) -> None:
        """An undecodable message (``over_budget``: refused for its size before decoding)."""
        port.stats.on_bad_input(reason, over_budget)
        held = self._throttle.allow((port.key, "bad_input"))
        if held is not None:
            topic = port.subscription.topic_name if port.subscription is not None else "?"
            self._log.error(f"bad input on {topic}: {reason}; frame skipped" + _held_text(held))

    def frame_error(self, port: "CameraPort", image_shape: tuple[int, ...], exc: Exception,
                    device: Any = None) -> None:
        """A frame ((H, W, 3) ``image_shape``) the pipeline could not process. CUDA out of
        memory on ``device``: the frame is skipped and the cache released
        (:func:`cuda_oom_reason`); the stream's memory is kept (a failed step stores nothing)."""
        reason = cuda_oom_reason(exc, device) or f"{type(exc).__name__}: {one_line(exc)}"
        port.stats.on_error(reason)
        held = self._throttle.allow((port.key, "error"))
        if held is not None:
            self._log.error(f"camera '{port.key}': frame {image_shape[1]}x{image_shape[0]} "
                            f"could not be processed: {reason}" + _held_text(held))

    def reset(self, port: "CameraPort", reason: str, gap_s: float | None,
              max_gap_s: float) -> None:
        """A memory reset of ``port`` and its reason; a ``gap`` reset says the gap ``gap_s`` and
        ``memory.max_gap`` ``max_gap_s`` (seconds)."""
        held = self._throttle.allow((port.key, "reset", reason))
        if held is None:
            return
        if reason == ResetReason.GAP.value and gap_s is not None:
            reason = f"gap {gap_s:.2f} s > memory.max_gap {max_gap_s} s"
        self._log.info(f"camera '{port.key}': memory reset ({reason})"
                       + (f", {held} more since the last message" if held else ""))

    def reset_request(self, service: str, message: str) -> None:
        """A reset request on ``service`` when it arrives (the reset itself is logged at the
        next frame); a burst gives one line per period with the count held back."""
        held = self._throttle.allow(("reset_request", service))
        if held is not None:
            self._log.info(f"{service}: {message}; applied before the next frame"
                           + _held_text(held, "more requests since the last message"))

    def allow(self, key: Any) -> int | None:
        """The throttle itself, for other kinds of lines (None: hold this one back)."""
        return self._throttle.allow(key)
