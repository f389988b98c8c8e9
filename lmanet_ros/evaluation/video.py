"""Overlay videos: each input frame beside its segmentation overlay, as an H.264 MP4 that
browsers play (:class:`~.h264.H264Writer`).

:class:`OverlayVideo` writes frames as they come (the offline evaluation has both images at
once); :class:`LiveVideo` pairs the frames a replay publishes with the overlays a running node
sends back, by header stamp, before writing them; :class:`ComparisonVideo` (``comparison.mp4``
of an offline comparison) puts the input beside every model's overlay, each panel captioned,
the input's caption tagged with the frame's corruption kinds when it has any.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lmanet_ros.stamps import NS_PER_S

from .h264 import H264Writer

__all__ = ["COMPARISON_FILE", "VIDEO_FILE", "ComparisonVideo", "LiveVideo", "OverlayVideo",
           "caption_height", "comparison_row", "recorded_fps"]

#: The video of an evaluation directory (the first camera's).
VIDEO_FILE = "overlay.mp4"
#: The side-by-side video of a comparison of several models (the first camera's).
COMPARISON_FILE = "comparison.mp4"
#: Caption strip colours (RGB): background, text, and background of a corrupted frame's tag.
_CAPTION_BACK = (32, 32, 32)
_CAPTION_TEXT = (255, 255, 255)
_TAG_BACK = (200, 30, 30)


def recorded_fps(stamps_ns: list[int] | np.ndarray, default: float = 17.0) -> float:
    """Frame rate of a camera from some of its consecutive stamps (int ns): 1 / the median
    positive step, so pauses between recordings and equal stamps do not count; ``default``
    without one."""
    steps = np.diff(np.asarray(stamps_ns, dtype=np.int64))
    steps = steps[steps > 0]
    return float(NS_PER_S / np.median(steps)) if steps.size else default


class OverlayVideo:
    """An H.264 MP4 of input and overlay side by side, one row per frame written.

    The first frame fixes the size; later frames of another size are resized to it. Use as a
    context manager so the file is finalised (playable) even when the run is interrupted.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        """Prepare ``path``; the encoder starts on the first frame (its size is known then)."""
        self._writer = H264Writer(path, fps)
        self.path = self._writer.path
        self.fps = self._writer.fps
        self._size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray, overlay: np.ndarray) -> None:
        """Append one frame: ``rgb`` and ``overlay``, (H, W, 3) uint8 RGB of the same size."""
        self.write_row(np.concatenate([rgb, overlay], axis=1))

    def write_row(self, frame: np.ndarray) -> None:
        """Append one video frame as it is: (H, W, 3) uint8 RGB (resized to the first's size).

        Raises:
            OSError: no H.264 encoder (imageio-ffmpeg missing), or the encoder failed.
        """
        if self._size is None:
            self._size = (frame.shape[1], frame.shape[0])
        elif (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)

    @property
    def frames(self) -> int:
        """Frames written."""
        return self._writer.frames

    def close(self) -> None:
        """Finalise the file (waits for the encoder)."""
        self._writer.close()

    def __enter__(self) -> "OverlayVideo":
        """Return self."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Finalise the file, whatever happened."""
        self.close()


def caption_height(height: int) -> int:
    """Height in pixels of the caption strip above panels ``height`` pixels tall (even)."""
    return 2 * max(8, height // 16)


def _caption(width: int, strip: int, text: str, background: tuple[int, int, int]) -> np.ndarray:
    """A (strip, width, 3) uint8 RGB caption: ``text`` left-aligned, shrunk to fit the width."""
    image = np.empty((strip, width, 3), np.uint8)
    image[:] = background
    if text:
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = strip / 36.0
        text_width = cv2.getTextSize(text, font, scale, 1)[0][0]
        if text_width > width - 6:
            scale *= (width - 6) / text_width
        baseline = strip - max(2, (strip - int(round(22 * scale))) // 2)
        cv2.putText(image, text, (3, baseline), font, scale, _CAPTION_TEXT, 1, cv2.LINE_AA)
    return image


def comparison_row(rgb: np.ndarray, overlays: Sequence[np.ndarray],
                   captions: Sequence[str] | None, tag: str = "") -> np.ndarray:
    """One frame of a comparison video: input | overlay 1 | overlay 2 ..., each panel under a
    caption strip (:func:`caption_height` pixels).

    Args:
        rgb: the input frame, (H, W, 3) uint8 RGB.
        overlays: one (H, W, 3) uint8 RGB overlay per model (resized to H x W if not).
        captions: ``["input", model 1, model 2, ...]`` (one per panel), or None for blank
            strips (the same layout uncaptioned).
        tag: when not empty (the frame's corruption kinds, e.g. ``"wiper"``), added to the
            input's caption on a red strip.

    Returns:
        (H + strip, (1 + len(overlays)) * W, 3) uint8 RGB.
    """
    height, width = rgb.shape[:2]
    panels = [rgb] + [o if o.shape[:2] == (height, width) else
                      cv2.resize(o, (width, height), interpolation=cv2.INTER_NEAREST)
                      for o in overlays]
    if captions is not None and len(captions) != len(panels):
        raise ValueError(f"{len(panels)} panels but {len(captions)} captions")
    strip = caption_height(height)
    columns = []
    for index, panel in enumerate(panels):
        text = captions[index] if captions is not None else ""
        back = _CAPTION_BACK
        if index == 0 and tag:
            back = _TAG_BACK
            text = f"{text}: {tag}" if captions is not None else ""
        columns.append(np.concatenate([_caption(width, strip, text, back), panel], axis=0))
    return np.concatenate(columns, axis=1)


class ComparisonVideo:
    """``comparison.mp4``: the input beside each model's overlay, one row per frame, captioned
    (:func:`comparison_row`), encoded by :class:`OverlayVideo`. Use as a context manager."""

    def __init__(self, path: str | Path, fps: float, labels: Sequence[str]) -> None:
        """Prepare ``path``; ``labels``: the model of each overlay panel, in order."""
        self.video = OverlayVideo(path, fps)
        self.captions = ["input", *labels]

    @property
    def path(self) -> Path:
        """The video file."""
        return self.video.path

    @property
    def frames(self) -> int:
        """Frames written."""
        return self.video.frames

    def write(self, rgb: np.ndarray, overlays: Sequence[np.ndarray], tag: str = "") -> None:
        """Append the row of one frame: (H, W, 3) uint8 RGB input and overlays in label order;
        ``tag``: the frame's corruption kinds ("" for a clean or unlogged frame)."""
        if len(overlays) != len(self.captions) - 1:
            raise ValueError(f"{len(self.captions) - 1} models but {len(overlays)} overlays")
        self.video.write_row(comparison_row(rgb, overlays, self.captions, tag))

    def close(self) -> None:
        """Finalise the file."""
        self.video.close()

    def __enter__(self) -> "ComparisonVideo":
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
