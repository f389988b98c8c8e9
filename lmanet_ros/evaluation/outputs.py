"""What the offline evaluation writes per frame: a labelled rosbag2 and the overlay videos.

:class:`OutputWorker` renders colour masks and overlays and writes them on a thread of its own
(:class:`OutputBag` through :class:`lmanet_ros.bags.BagWriter`, :class:`~.video.OverlayVideo`),
so disk and encoding time overlap the network.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from pathlib import Path

import numpy as np

from lmanet_ros.bags import STORAGES, BagError, BagWriter, ImageRecord
from lmanet_ros.imaging import colorize, overlay

from .options import EvalError
from .video import VIDEO_FILE, OverlayVideo

__all__ = ["OUTPUT_KINDS", "OVERLAY_ALPHA", "OutputBag", "OutputWorker", "safe_name"]

#: Weight of the colour mask in the overlay images and video.
OVERLAY_ALPHA = 0.5
#: The images written per frame and model: class ids (mono8), colour mask and overlay (rgb8).
OUTPUT_KINDS = ("labels", "color", "overlay")


def safe_name(text: str) -> str:
    """A file- and topic-friendly version of ``text`` (letters, digits, underscores)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    return name or "unnamed"


class OutputBag:
    """Labels (mono8), colour and overlay (rgb8) images per image topic and model, as a rosbag2.

    Topics: ``<image topic>/<model label>/labels|color|overlay``; header and recording time are
    the input frame's. The bag is created by the thread that writes first (sqlite3 connections
    belong to one thread).
    """

    def __init__(self, path: Path, storage: str, kinds: tuple[str, ...] = OUTPUT_KINDS) -> None:
        """Prepare the bag at ``path`` (must not exist) in ``storage`` (mcap or sqlite3)."""
        if path.exists():
            raise EvalError(f"output bag {path} exists; remove it or choose another path")
        if storage not in STORAGES:
            raise EvalError(f"output bag storage must be one of {STORAGES}, got '{storage}'")
        self.path = path
        self.kinds = kinds
        self._writer: BagWriter | None = BagWriter(path, storage=storage)
        self._opened = False
        self.messages = 0

    def topic(self, image_topic: str, model_label: str, kind: str) -> str:
        """Output topic name of ``kind`` for a camera topic and a model."""
        return f"{image_topic.rstrip('/')}/{safe_name(model_label)}/{kind}"

    def _open(self) -> BagWriter:
        if self._writer is None:
            raise BagError(f"{self.path}: closed")
        if not self._opened:
            self._writer.open()
            self._opened = True
        return self._writer

    def write(self, frame: ImageRecord, model_label: str, images: dict[str, np.ndarray]) -> None:
        """Write the images (``kind`` -> (H, W) or (H, W, 3) uint8 array) of one frame."""
        writer = self._open()
        for kind in self.kinds:
            array = images[kind]
            writer.write_image(self.topic(frame.topic, model_label, kind), frame.stamp_ns,
                               frame.frame_id, array, "mono8" if array.ndim == 2 else "rgb8",
                               log_time_ns=frame.log_time_ns)
            self.messages += 1

    def close(self) -> None:
        """Finish the bag (metadata written; readable afterwards), also an empty one."""
        if self._writer is not None:
            self._open()
            writer, self._writer = self._writer, None
            writer.close()


class OutputWorker:
    """Renders colour masks and overlays and writes the output bag and videos on a thread of its
    own, so disk and encoding time overlap the network (a bounded queue keeps memory flat).

    ``timing`` holds the seconds spent on the bag (``output_bag_s``) and videos (``video_s``).
    """

    def __init__(self, bag_out: OutputBag | None, out: Path, fps: dict[str, float],
                 palette: np.ndarray, depth: int = 8) -> None:
        """Start the thread; ``fps`` gives each camera topic's video frame rate, ``palette`` the
        (K, 3) uint8 class colours."""
        self.bag_out = bag_out
        self.videos: dict[str, OverlayVideo] = {}
        self.timing = {"output_bag_s": 0.0, "video_s": 0.0}
        self._out, self._fps, self._palette = out, fps, palette
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="eval-outputs", daemon=True)
        self._thread.start()

    def submit(self, frame: ImageRecord, model_label: str, labels: np.ndarray, *,
               bag: bool, video: bool) -> None:
        """Queue one result ((H, W) uint8 ``labels`` of the RGB ``frame``; blocks while the
        queue is full); raises the worker's error."""
        if self._error is not None:
            raise self._error
        if bag or video:
            self._queue.put((frame, model_label, labels, bag, video))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._finish()
                return
            if self._error is not None:
                continue
            try:
                self._render(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self._error = exc

    def _render(self, frame: ImageRecord, model_label: str, labels: np.ndarray, bag: bool,
                video: bool) -> None:
        start = time.perf_counter()
        color = colorize(labels, self._palette)
        blended = overlay(frame.image, color, OVERLAY_ALPHA)
        render_s = time.perf_counter() - start
        if bag and self.bag_out is not None:
            start = time.perf_counter()
            self.bag_out.write(frame, model_label,
                               {"labels": labels, "color": color, "overlay": blended})
            self.timing["output_bag_s"] += time.perf_counter() - start + render_s
            render_s = 0.0
        if video:
            start = time.perf_counter()
            writer = self.videos.get(frame.topic)
            if writer is None:
                name = VIDEO_FILE if not self.videos else f"overlay_{safe_name(frame.topic)}.mp4"
                writer = self.videos[frame.topic] = OverlayVideo(self._out / name,
                                                                 self._fps[frame.topic])
            writer.write(frame.image, blended)
            self.timing["video_s"] += time.perf_counter() - start + render_s

    def _finish(self) -> None:
        """On the worker thread: finalise the videos and the bag."""
        try:
            start = time.perf_counter()
            for writer in self.videos.values():
                writer.close()
            self.timing["video_s"] += time.perf_counter() - start
            if self.bag_out is not None:
                start = time.perf_counter()
                self.bag_out.close()
                self.timing["output_bag_s"] += time.perf_counter() - start
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._error = self._error or exc

    def close(self) -> None:
        """Finish the queued work, finalise videos and bag; raise the worker's error if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
