"""Overlay videos: each input frame beside its segmentation overlay, as an MP4 (mp4v).

:class:`OverlayVideo` writes frames as they come (the offline evaluation has both images at
once); :class:`LiveVideo` pairs the frames a replay publishes with the overlays a running node
sends back, by header stamp, before writing them.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

import cv2
import numpy as np

from lmanet_ros.stamps import NS_PER_S

__all__ = ["VIDEO_FILE", "LiveVideo", "OverlayVideo", "recorded_fps"]

#: The video of an evaluation directory (the first camera's).
VIDEO_FILE = "overlay.mp4"


def recorded_fps(stamps_ns: list[int] | np.ndarray, default: float = 17.0) -> float:
    """Frame rate of a camera from some of its consecutive stamps (int ns): 1 / the median
    positive step, so pauses between recordings and equal stamps do not count; ``default``
    without one."""
    steps = np.diff(np.asarray(stamps_ns, dtype=np.int64))
    steps = steps[steps > 0]
    return float(NS_PER_S / np.median(steps)) if steps.size else default


class OverlayVideo:
    """An MP4 (mp4v) of input and overlay side by side, one row per frame written.

    The first frame fixes the size; later frames of another size are resized to it. Use as a
    context manager so the file is finalised (playable) even when the run is interrupted.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        """Prepare ``path``; the writer opens on the first frame (its size is known then)."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray, overlay: np.ndarray) -> None:
        """Append one frame: ``rgb`` and ``overlay``, (H, W, 3) uint8 RGB of the same size."""
        frame = np.concatenate([rgb, overlay], axis=1)
        if self._writer is None:
            height, width = frame.shape[:2]
            self._size = (width + width % 2, height + height % 2)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(f"cannot open an mp4v video writer for {self.path}")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finalise the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "OverlayVideo":
        """Return self."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Finalise the file, whatever happened."""
        self.close()


class LiveVideo:
    """``overlay.mp4`` of a live run: input frames beside the overlays the node published.

    Frames are written in the order they were published, each once its input (given by the
    replay) and the node's overlay of the same stamp are both known; frames of equal stamps are
    matched first in, first out; a frame whose overlay never comes is skipped and counted
    (``missing``). The video's frame rate is the recorded one: 1 / the median step between the
    first input stamps (:data:`FPS_PROBE` of them), whatever the replay speed.
    """

    #: Input stamps from which the frame rate is taken before the first frame is written.
    FPS_PROBE = 16

    def __init__(self, path: Path) -> None:
        """Prepare ``path``; nothing is written before :data:`FPS_PROBE` inputs (or the end)."""
        self.path = path
        self.video: OverlayVideo | None = None
        self.order: deque[tuple[int, np.ndarray]] = deque()
        self.overlays: dict[int, deque[np.ndarray]] = {}
        self.stamps: list[int] = []
        self.frames = 0
        self.missing = 0

    def add_input(self, stamp_ns: int, rgb: np.ndarray) -> None:
        """A frame about to be published: (H, W, 3) uint8 RGB (grey (H, W) is widened)."""
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        self.order.append((stamp_ns, rgb))
        if len(self.stamps) < self.FPS_PROBE:
            self.stamps.append(stamp_ns)
        self.flush()

    def add_overlay(self, stamp_ns: int, rgb: np.ndarray) -> None:
        """The node's overlay (rgb8, (H, W, 3)) of the frame stamped ``stamp_ns``."""
        self.overlays.setdefault(stamp_ns, deque()).append(rgb)
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Write every frame at the head of the order that is complete (``final``: skip the
        incomplete ones instead of waiting). Waits for :data:`FPS_PROBE` inputs (or the end)
        before the first frame."""
        if self.video is None:
            if len(self.stamps) < self.FPS_PROBE and not final:
                return
            self.video = OverlayVideo(self.path, recorded_fps(self.stamps))
        while self.order:
            stamp, rgb = self.order[0]
            waiting = self.overlays.get(stamp)
            if not waiting and not final:
                return
            self.order.popleft()
            if not waiting:
                self.missing += 1
                continue
            overlay = waiting.popleft()
            if not waiting:
                del self.overlays[stamp]
            if overlay.shape != rgb.shape:
                overlay = cv2.resize(overlay, (rgb.shape[1], rgb.shape[0]),
                                     interpolation=cv2.INTER_NEAREST)
            self.video.write(rgb, overlay)
            self.frames += 1

    @property
    def pending(self) -> int:
        """Frames published whose overlay has not come yet."""
        return len(self.order)

    def close(self) -> None:
        """Write what is complete and finalise the file."""
        try:
            self.flush(final=True)
        finally:
            if self.video is not None:
                self.video.close()
